"""torch's fp32 products (MKL in torch's CPU build) against oneDNN's (torch.ops.mkldnn, what
hybridpo.fast.onednn_gemm calls) on the shapes of a SmolLM2-135M DPO step, 2 threads.

For each of the block's product shapes at M = 4,096 positions: the forward's x Wᵀ, the backward's
dX = dY W and dW = dYᵀ X, each as torch computes it and as onednn_gemm does (dW as (Xᵀ dY)ᵀ on
strided views); GFLOP/s of the best of 3 rounds of 10 calls.

    PYTHONPATH=. .venv/bin/python docs/bench/matmul_paths.py > docs/bench/amd/matmul_paths.md
"""

import time

import torch

from hybridpo.bench.record import machine
from hybridpo.fast import onednn_gemm as og


def rate(f, flops: float) -> float:
    f(), f()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(10):
            f()
        best = min(best, (time.perf_counter() - t) / 10)
    return flops / best / 1e9


def main() -> None:
    torch.set_num_threads(2)
    why = og.unsupported_reason()
    if why is not None:
        raise SystemExit(f"oneDNN is unavailable here: {why}")
    print(f"{machine()}; torch {torch.__version__}, 2 threads, fp32, M = 4,096 positions; GFLOP/s, best of 3 x 10 calls.\n")
    print("| product (K -> N) | x Wᵀ torch | x Wᵀ oneDNN | dY W torch | dY W oneDNN | dYᵀ X torch | dYᵀ X oneDNN |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    g = torch.Generator().manual_seed(0)
    M = 4096
    for name, K, N in (("q, o (576 -> 576)", 576, 576), ("k, v (576 -> 192)", 576, 192),
                       ("gate, up (576 -> 1,536)", 576, 1536), ("down (1,536 -> 576)", 1536, 576)):
        x, w, dy = torch.randn(M, K, generator=g), torch.randn(N, K, generator=g), torch.randn(M, N, generator=g)
        flops = 2 * M * K * N
        rates = [rate(lambda: torch.nn.functional.linear(x, w), flops), rate(lambda: og.linear(x, w, onednn=True), flops),
                 rate(lambda: dy @ w, flops), rate(lambda: og.mm(dy, w, onednn=True), flops),
                 rate(lambda: dy.t() @ x, flops), rate(lambda: og.mm_tn(dy, x, onednn=True), flops)]
        print(f"| {name} | " + " | ".join(f"{r:.0f}" for r in rates) + " |")


if __name__ == "__main__":
    main()
