"""One causal span's attention, forward and backward, on our kernel and on torch's CPU flash kernel.

Our kernel in the form that loads here (hybridpo.fast.varlen_attention.ours: the AVX-512 one, else
the AVX2 one; the table's first line names it). SmolLM2-135M's heads (9 query heads over 3 key / value heads, 64 wide) at the span lengths of
its UltraFeedback batches; the median of `--repeats` calls each after 3 warm-ups, 2 threads.

    PYTHONPATH=. .venv/bin/python docs/bench/span_kernel_one_span.py > docs/bench/smollm2/span_kernel_one_span.md
"""

import argparse
import statistics
import time

import torch

from hybridpo.bench.record import machine
from hybridpo.fast import kernels, varlen_attention


def median_ms(f, repeats: int) -> float:
    for _ in range(3):
        f()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(2)
    why = varlen_attention.ours_unsupported_reason()
    if why is not None:
        raise SystemExit(f"our kernels are unavailable here: {why}")
    ops, aten = varlen_attention.ours(), torch.ops.aten
    form = "AVX-512 (csrc/span_attention.cpp)" if kernels.load() is None else "AVX2 (csrc/avx2/span_attention_avx2.cpp)"
    print(f"{machine()}; torch threads 2, fp32; one causal span, 9 query heads over 3 key / value heads of 64; "
          f"median of {args.repeats} calls; ours: the {form} form.\n")
    print("| span length | ours forward ms | flash forward ms | ours backward ms | flash backward ms | ours / flash, both |")
    print("|---:|---:|---:|---:|---:|---:|")
    g = torch.Generator().manual_seed(0)
    for n in (64, 180, 330, 500):
        q, grad = torch.randn(2, n, 9, 64, generator=g).unbind(0)
        k, v = torch.randn(2, n, 3, 64, generator=g).unbind(0)
        spans = torch.tensor([[0, n, 0, n, 0, 0]])
        out, lse = ops.span_attention(q, k, v, spans, 0.125)
        qf, kf, vf, gf = (t.transpose(0, 1)[None] for t in (q, k, v, grad))  # (1, heads, n, 64) views
        of, lf = aten._scaled_dot_product_flash_attention_for_cpu(qf, kf, vf, 0.0, True, scale=0.125)
        times = [median_ms(lambda: ops.span_attention(q, k, v, spans, 0.125), args.repeats),
                 median_ms(lambda: aten._scaled_dot_product_flash_attention_for_cpu(qf, kf, vf, 0.0, True, scale=0.125), args.repeats),
                 median_ms(lambda: ops.span_attention_backward(grad, q, k, v, out, lse, spans, 0.125), args.repeats),
                 median_ms(lambda: aten._scaled_dot_product_flash_attention_for_cpu_backward(
                     gf, qf, kf, vf, of, lf, 0.0, True, scale=0.125), args.repeats)]
        both = (times[0] + times[2]) / (times[1] + times[3])
        print(f"| {n} | " + " | ".join(f"{t:.3f}" for t in times) + f" | {both:.2f} |")


if __name__ == "__main__":
    main()
