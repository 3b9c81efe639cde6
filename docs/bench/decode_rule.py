"""Measure the sampler's decode step, lean (hybridpo.fast.neox_decode / llama_decode) against
transformers' forward, across model sizes: the data behind hybridpo.fast.decoder_for's auto rule (the lean step
on CPU at every size, no size test).

    PYTHONPATH=. python docs/bench/decode_rule.py --threads 1

Each row: one `sample` call (prefill + decode) of P prompts x k samples to a fixed length (no EOS
stop), min CPU time over --reps, per decode step; same generator, so both draw the same tokens.
"""

from __future__ import annotations

import argparse
import time

import torch

from hybridpo import zoo
from hybridpo.rollout import sample

SHAPES = [  # (arch, size, vocab, prompts, prompt length, k, new tokens): the sampling shapes of the repo's runs
    ("gpt-neox", "tiny", 128, 32, 12, 2, 8),  # the gold task at its smallest (2 x 64)
    ("gpt-neox", "small", 128, 32, 12, 2, 8),  # the gold task's default policy (4 x 128)
    ("gpt-neox", "pythia-70m", 50304, 8, 334, 2, 53),  # HyPO on TL;DR (6 x 512)
    ("llama", "tiny", 128, 32, 12, 2, 8),
    ("llama", "smollm2-135m", 49152, 8, 128, 2, 53),  # HyPO on UltraFeedback (30 x 576)
]


def cpu_min(fn, reps):
    best = float("inf")
    for _ in range(reps):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print("| model | samples x tokens | transformers s/step | lean s/step | lean / transformers |")
    print("|---|---|---:|---:|---:|")
    for arch, size, vocab, P, L, k, new in SHAPES:
        model = zoo.random_model(arch, size, vocab).eval()
        g = torch.Generator().manual_seed(0)
        prompts = [torch.randint(2, vocab, (L,), generator=g).tolist() for _ in range(P)]
        lean = "neox" if arch == "gpt-neox" else "llama"
        times = {}
        for decoder in ("transformers", lean):
            run = lambda: sample(model, prompts, k, max_new_tokens=new, eos_id=-1, pad_id=1,  # noqa: E731
                                 generator=torch.Generator().manual_seed(1), decoder=decoder)
            run()  # warm-up
            times[decoder] = cpu_min(run, args.reps) / (new - 1)
        ratio = times[lean] / times["transformers"]
        print(f"| {arch} {size} | {P * k} x {new} | {times['transformers']:.4f} | {times[lean]:.4f} | {ratio:.2f} |",
              flush=True)


if __name__ == "__main__":
    main()
