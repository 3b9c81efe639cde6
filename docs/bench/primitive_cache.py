"""Resident memory of SmolLM2 DPO steps whose batches have new lengths every step, with oneDNN's
products (hybridpo.fast.onednn_gemm), under the primitive-cache capacities the environment names.

A DPO step's model work (the policy's log-probs with grad, the reference's without, the backward;
every speed setting as `auto` has it) on 8 random prompts with 2 random responses each, so the
packed row count differs every step as in training. Prints the resident memory after each step and
the median step time. oneDNN reads its capacities once, at its first primitive, so each setting is
its own process:

    PYTHONPATH=. ONEDNN_PRIMITIVE_CACHE_CAPACITY=1024 LRU_CACHE_CAPACITY=1024 .venv/bin/python docs/bench/primitive_cache.py
    PYTHONPATH=. .venv/bin/python docs/bench/primitive_cache.py    # the caps hybridpo.fast.onednn_gemm sets at import (64)
"""

import argparse
import os
import statistics
import time

import torch

from hybridpo.bench.record import current_rss, machine
from hybridpo.bench.workloads import build_model, get_workload
from hybridpo.fast import onednn_gemm
from hybridpo.fast.cpu_memory import keep_freed_memory
from hybridpo.forward import response_logps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(2)
    keep_freed_memory()
    caps = {name: os.environ[name] for name in onednn_gemm._CACHE_VARIABLES}  # set at its import unless named
    model = build_model(get_workload("smollm2-dpo")).train()
    g = torch.Generator().manual_seed(0)

    def ids(lo: int, hi: int) -> list[int]:
        return torch.randint(1, 40000, (int(torch.randint(lo, hi, (1,), generator=g)),), generator=g).tolist()

    rss, times = [], []
    for _ in range(args.steps):
        prompts = [ids(60, 160) for _ in range(8)]
        responses = [[ids(60, 180), ids(60, 180)] for _ in range(8)]
        t = time.perf_counter()
        out = response_logps(model, prompts, responses, pad_id=0)
        with torch.no_grad():
            response_logps(model, prompts, responses, pad_id=0)
        out.logps.sum().backward()
        model.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
        rss.append(current_rss() / 1e9)
    print(f"{machine()}; SmolLM2-135M-Instruct, DPO model work on 8 random pairs a step; caches {caps}")
    print(f"resident GB after each step: {', '.join(f'{r:.2f}' for r in rss)}")
    print(f"median step {statistics.median(times[1:]):.2f} s")


if __name__ == "__main__":
    main()
