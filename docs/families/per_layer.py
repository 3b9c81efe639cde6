"""Per-layer cost of the packed and prompt-pass paths (forward + backward) on the issue-17 workload:
the same loaded SmolLM2 cut to L_lo and L_hi blocks, each path profiled at both depths in one
process; (hi - lo) / (L_hi - L_lo) per op name is what one block costs, what is left at depth 0
is the embedding + head + log-softmax (the same for both paths up to the positions scored).

    PYTHONPATH=. python docs/families/per_layer.py --lo 2 --hi 6
"""

from __future__ import annotations

import argparse
import collections
import time

import torch
from torch.profiler import ProfilerActivity, profile

from profile_prompt_pass import run
from workload import pairs_and_samples, smollm2


def op_times(model, prompts, both, path, pad):
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        run(model, prompts, both, path, pad)
        wall = time.perf_counter() - t
    ops = collections.Counter()
    for e in prof.key_averages():
        ops[e.key] += e.self_cpu_time_total / 1e6
    return wall, ops


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lo", type=int, default=2)
    ap.add_argument("--hi", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--top", type=int, default=14)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = smollm2()
    full = model.model.layers
    pad = tok.pad_token_id
    prompts, pairs, samples = pairs_and_samples(tok)
    both = [p + s for p, s in zip(pairs, samples)]
    res = {}
    for L in (args.lo, args.hi):
        model.model.layers = full[:L]
        model.config.num_hidden_layers = L
        run(model, prompts, both, "packed", pad)  # warm-up
        for path in ("packed", "prompt_pass"):
            res[path, L] = op_times(model, prompts, both, path, pad)
    span = args.hi - args.lo
    for path in ("packed", "prompt_pass"):
        (w_lo, o_lo), (w_hi, o_hi) = res[path, args.lo], res[path, args.hi]
        per_layer = (w_hi - w_lo) / span
        fixed = w_lo - args.lo * per_layer
        print(f"\n=== {path}: per block {per_layer:.3f} s, depth-0 part {fixed:.2f} s; "
              f"30 blocks -> {fixed + 30 * per_layer:.1f} s (single thread)")
        diff = {k: (o_hi[k] - o_lo.get(k, 0.0)) / span for k in o_hi}
        for k, v in sorted(diff.items(), key=lambda kv: -kv[1])[: args.top]:
            print(f"  {v * 1e3:8.1f} ms/block  {k[:70]}")
    pl = {p: (res[p, args.hi][0] - res[p, args.lo][0]) / span for p in ("packed", "prompt_pass")}
    print(f"\nper-block ratio prompt_pass / packed = {pl['prompt_pass'] / pl['packed']:.2f}")


if __name__ == "__main__":
    main()
