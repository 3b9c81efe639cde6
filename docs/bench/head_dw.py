"""The LM head's weight gradient, dW = Σ_blocks dLᵀ h, on a SmolLM2-135M DPO batch's shape, 2 threads.

hybridpo.fast.fused_head's backward walks the positions in blocks of 64 MB of logits (341 rows of
SmolLM2's 49,152-token vocabulary) and adds each block's (V, n)ᵀ-by-(n, d) product into one
(V, d) = (49,152, 576) fp32 gradient. Ways to do it, each timed over the blocks of U positions:

    mkl addmm            d_weight.addmm_(dLᵀ, h) per block (torch's product, MKL: add_mm_tn's fallback)
    onednn (V,d) + add   oneDNN's linear(dLᵀ, hᵀ) per block, added into d_weight (onednn_gemm.add_mm_tn)
    onednn fused add     oneDNN's linear with its binary "add" post-op reading the sum so far
    onednn mm_tn + add   hybridpo.fast.onednn_gemm.mm_tn per block (the body's dW path), added

GFLOP/s of the best of 3 rounds, counting 2 U V d, with freed memory kept as `hybridpo train` keeps
it (hybridpo.fast.cpu_memory).

    PYTHONPATH=. .venv/bin/python docs/bench/head_dw.py > docs/bench/amd/head_dw.md
"""

import argparse
import time

import torch

from hybridpo.bench.record import machine
from hybridpo.fast import cpu_memory, fused_head
from hybridpo.fast import onednn_gemm as og

_LINEAR = torch.ops.mkldnn._linear_pointwise


def ways():
    def mkl(blocks, h, d_weight):
        for d_logits, a, b in blocks:
            og.add_mm_tn(d_weight, d_logits, h[a:b], onednn=False)

    def onednn_add(blocks, h, d_weight):
        for d_logits, a, b in blocks:
            og.add_mm_tn(d_weight, d_logits, h[a:b], onednn=True)

    def onednn_fused(blocks, h, d_weight):
        out = d_weight
        for d_logits, a, b in blocks:
            out = _LINEAR.binary(d_logits.t(), out, h[a:b].t(), None, "add")
        d_weight.copy_(out)

    def onednn_mm_tn(blocks, h, d_weight):
        for d_logits, a, b in blocks:
            d_weight += og.mm_tn(d_logits, h[a:b], onednn=True)

    return {"mkl addmm": mkl, "onednn (V,d) + add": onednn_add, "onednn fused add": onednn_fused,
            "onednn mm_tn + add": onednn_mm_tn}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--positions", type=int, nargs="+", default=[2350, 4096])
    args = parser.parse_args()
    torch.set_num_threads(2)
    cpu_memory.keep_freed_memory()  # as a training process has it: a freed block is reused, no page faults
    V, d = 49152, 576
    g = torch.Generator().manual_seed(0)
    print(f"{machine()}; torch {torch.__version__}, 2 threads, fp32; V = {V:,}, d = {d}; "
          f"GFLOP/s of 2 U V d, best of 3 rounds; fused_head's blocks of {fused_head._blocks(10**9, V)[0][1]} rows.\n")
    table = ways()
    print("| U positions | blocks | " + " | ".join(table) + " |")
    print("|---:|---:|" + "---:|" * len(table))
    for U in args.positions:
        h = torch.randn(U, d, generator=g)
        blocks = [(torch.randn(b - a, V, generator=g), a, b) for a, b in fused_head._blocks(U, V)]
        flops = 2 * U * V * d
        rates, results = [], []
        for f in table.values():
            best = float("inf")
            for _ in range(4):  # the first round warms up
                d_weight = torch.zeros(V, d)
                t = time.perf_counter()
                f(blocks, h, d_weight)
                best = min(best, time.perf_counter() - t)
            rates.append(flops / best / 1e9)
            results.append(d_weight)
        worst = max(float((r - results[0]).abs().max() / results[0].abs().max()) for r in results[1:])
        print(f"| {U:,} | {len(blocks)} | " + " | ".join(f"{r:.0f}" for r in rates) + " |")
        print(f"\n(U = {U:,}: the ways agree to {worst:.1e} of the largest entry.)\n")


if __name__ == "__main__":
    main()
