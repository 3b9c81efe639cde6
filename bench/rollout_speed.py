"""Micro-benchmark (not a test): rollout.sample vs transformers' generate for k samples per prompt.

    .venv/bin/python bench/rollout_speed.py                  # tldr shape, 8 prompts, k = 2, 53 tokens
    .venv/bin/python bench/rollout_speed.py --prompts 4 --k 4 --new-tokens 32

Workload: the first shared TL;DR prompts (prompt + "\\nTL;DR:", real Pythia tokenizer; ~334
tokens), a Pythia-70m-shaped model (random init, vocab 50304), fp32 CPU, plain sampling at τ = 1.
`generate(num_return_sequences=k)` repeats every prompt k times BEFORE its prefill; rollout.sample
prefills each prompt once and repeats the KV cache. Random weights almost never emit EOS, so both
decode all `--new-tokens` steps: the difference is the prompt work (and whatever else generate
does per step). Warm-up run, then the median of `--repeats`, as wall and process-CPU time (the
steadier figure on a crowded machine, with --threads 1). The shared machine makes timings noisy.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from logprobs_speed import EOS, PAD, build_model, tldr_batches  # noqa: E402

from hybridpo.rollout import sample  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, float]:
    """Median wall and process-CPU seconds of `repeats` runs after a warm-up."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - cpu_start)
    return statistics.median(wall), statistics.median(cpu)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--k", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=53, help="the paper's TL;DR setting")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    prompts = tldr_batches(1, args.prompts)[0][0]
    model = build_model("tldr").eval()

    def ours():
        sample(model, prompts, args.k, max_new_tokens=args.new_tokens, eos_id=EOS, pad_id=PAD,
               generator=torch.Generator().manual_seed(0))

    width = max(len(p) for p in prompts)
    ids = torch.tensor([[PAD] * (width - len(p)) + p for p in prompts])
    attn = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])

    def theirs():
        with torch.no_grad():
            model.generate(input_ids=ids, attention_mask=attn, do_sample=True, top_k=0, top_p=1.0,
                           num_return_sequences=args.k, max_new_tokens=args.new_tokens,
                           eos_token_id=EOS, pad_token_id=PAD)

    n = args.prompts * args.k
    print(f"{args.prompts} prompts (mean {sum(map(len, prompts)) / len(prompts):.0f} tokens) x k={args.k}, "
          f"{args.new_tokens} new tokens, {args.threads} threads")
    results = {}
    for name, fn in (("rollout.sample", ours), ("generate", theirs)):
        wall, cpu = results[name] = timed(fn, args.repeats)
        print(f"{name:<16} {wall:8.2f} s wall {cpu:8.2f} s CPU  {n / wall:6.2f} samples/s")
    (ow, oc), (gw, gc) = results["rollout.sample"], results["generate"]
    print(f"speed-up {gw / ow:.2f}x wall, {gc / oc:.2f}x CPU time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
