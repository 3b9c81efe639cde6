"""Where a SmolLM2 DPO step's time goes, op by op: a dispatch mode times every aten call.

Builds the smollm2-dpo workload's run as `hybridpo bench speed` does (the loop's own step, the
frozen-copy reference), runs `--warmup` steps, then times one step with every aten op's wall time
summed by op and input shape; matmuls also report their FLOP rate. The timer adds a few
microseconds per op (~0.1-0.2 s of a 15 s step). It runs with speed.elementwise "eager": compiled
chains are one call each and hide their insides from the timer.

    .venv/bin/python docs/bench/op_breakdown.py > docs/bench/smollm2/op_breakdown.md
"""

import argparse
import collections
import tempfile
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from hybridpo.bench.hybridpo_runner import _example, workload_config
from hybridpo.bench.record import machine
from hybridpo.bench.workloads import build_model, build_pairs, get_workload, load_tokenizer
from hybridpo.fast.cpu_memory import configure
from hybridpo.loop import Data, Run

MATMULS = ("mm", "addmm", "addmm_", "bmm", "_linear_pointwise")  # the last: oneDNN's x Wᵀ (speed.train_gemm)


class OpTimer(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.seconds, self.calls, self.flops = collections.defaultdict(float), collections.Counter(), collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        start = time.perf_counter()
        out = func(*args, **(kwargs or {}))
        elapsed = time.perf_counter() - start
        name = func.overloadpacket.__name__
        first = args[0] if args and isinstance(args[0], torch.Tensor) else None
        key = (name, tuple(first.shape) if first is not None else ())
        if name == "_linear_pointwise":  # x (..., K), W (N, K)
            x, w = args[0], args[1]
            key = (name, tuple(x.shape), tuple(w.shape))
            self.flops[key] += 2 * x.numel() * w.shape[0]
        elif name in MATMULS:
            a, b = (args[1], args[2]) if name.startswith("addmm") else (args[0], args[1])
            key = (name, tuple(a.shape), tuple(b.shape))
            self.flops[key] += 2 * a.shape[-2] * a.shape[-1] * b.shape[-1] * (a.shape[0] if name == "bmm" else 1)
        self.seconds[key] += elapsed
        self.calls[key] += 1
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warmup", type=int, default=3, help="steps before the timed one (the heap grows to size)")
    parser.add_argument("--rows", type=int, default=30)
    parser.add_argument("--elementwise", default="eager", choices=("eager", "auto"),
                        help="speed.elementwise: auto times each compiled chain as one call")
    args = parser.parse_args()
    torch.set_num_threads(2)
    w = get_workload("smollm2-dpo")
    with tempfile.TemporaryDirectory() as out_dir:
        cfg = workload_config(w, "dpo", {"beta": w.beta}, {"elementwise": args.elementwise}, out_dir)
        configure(cfg.speed.keep_freed_memory)
        tokenizer = load_tokenizer(w)
        pairs = build_pairs(w, tokenizer)
        run = Run.build(cfg, model=build_model(w).train(), tokenizer=tokenizer, data=Data([_example(p) for p in pairs]))
        run.prepare()
        for _ in range(args.warmup):
            run.step_once()
        timer = OpTimer()
        start = time.perf_counter()
        with timer:
            run.step_once()
        wall = time.perf_counter() - start
    total = sum(timer.seconds.values())
    mm = sum(v for k, v in timer.seconds.items() if k[0] in MATMULS)
    flops = sum(timer.flops.values())
    attention = sum(v for k, v in timer.seconds.items() if "attention" in k[0])
    print(f"{machine()}; torch threads 2, fp32; step {args.warmup + 1} of smollm2-dpo, speed.elementwise {args.elementwise}.\n")
    print(f"- step {wall:.2f} s wall; the ops' own times sum to {total:.2f} s")
    print(f"- matmuls {mm:.2f} s ({100 * mm / total:.0f}%), {flops / 1e12:.2f} TFLOP at {flops / mm / 1e9:.0f} GFLOP/s")
    # our kernels' ops (hybridpo_panel::*, the span kernel among them) do not pass the dispatch mode:
    # their time is in the step's wall time and in none of the ops' sums
    print(f"- attention kernels (SDPA flash, forward and backward; our span kernel is not timed here) {attention:.2f} s ({100 * attention / total:.0f}%)")
    print(f"- everything else {total - mm - attention:.2f} s ({100 * (total - mm - attention) / total:.0f}%)\n")
    print("| op | input shapes | calls | s | GFLOP/s |")
    print("|---|---|---:|---:|---:|")
    for key, seconds in sorted(timer.seconds.items(), key=lambda kv: -kv[1])[: args.rows]:
        rate = f"{timer.flops[key] / seconds / 1e9:.0f}" if key in timer.flops else ""
        print(f"| {key[0]} | {' x '.join(map(str, key[1:]))} | {timer.calls[key]} | {seconds:.3f} | {rate} |")


if __name__ == "__main__":
    main()
