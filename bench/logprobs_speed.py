"""Micro-benchmark (not a test): response_logps forward + backward, layout="padded" vs "packed".

    .venv/bin/python bench/logprobs_speed.py                 # both workloads, both layouts
    .venv/bin/python bench/logprobs_speed.py --workload tldr --steps 3

Workloads (issue 7), fp32, CPU, torch.set_num_threads fixed (default 2):
- tiny: 4-layer, 256-wide GPT-NeoX, vocab 512, random token ids, prompts ~63 tokens, responses
  ~38, batch 8 pairs.
- tldr: the first shared TL;DR pairs (prompt + "\\nTL;DR:", response " " + summary + EOS) with the
  real Pythia tokenizer, a Pythia-70m-shaped model (random init, vocab 50304, untied head),
  batch 8 pairs (prompts 142-511 tokens, mean ~334; responses ~35).
One step = log-probs of chosen and rejected for 8 pairs + backward of their sum. Each (workload,
layout) runs in its own process so peak RSS is its own; the first step is a warm-up, the figure is
the median of the rest, as wall time and as this process's CPU time (on a crowded machine the
CPU time, with --threads 1, is the steadier figure). tokens/s counts the same tokens for both layouts: Σ (|x| + |y|) over the
16 (prompt, response) sequences, i.e. the work a padded implementation describes. The shared
machine makes every timing noisy.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
EOS, PAD = 0, 1


def tiny_batches(n_batches: int, pairs: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lens = lambda mean, n: (mean + torch.randint(-12, 13, (n,), generator=g)).tolist()  # noqa: E731
    out = []
    for _ in range(n_batches):
        prompts = [torch.randint(2, 512, (n,), generator=g).tolist() for n in lens(63, pairs)]
        responses = [
            [torch.randint(2, 512, (n,), generator=g).tolist() + [EOS] for n in lens(37, 2)]
            for _ in range(pairs)
        ]
        out.append((prompts, responses))
    return out


def tldr_batches(n_batches: int, pairs: int):
    import pandas as pd
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(SHARED / "tokenizers/pythia/tokenizer.json"))
    rows = pd.read_parquet(SHARED / "data/tldr/tldr_comparisons_10k.parquet").head(n_batches * pairs)
    resp = lambda s: tok.encode(" " + s[len("TL;DR:"):].strip()) + [EOS]  # noqa: E731
    prompts = [tok.encode(p + "\nTL;DR:")[-511:] for p in rows.prompt]  # keep the end, as the data layer
    responses = [[resp(c), resp(r)] for c, r in zip(rows.chosen, rows.rejected)]
    return [(prompts[i : i + pairs], responses[i : i + pairs]) for i in range(0, len(prompts), pairs)]


def build_model(workload: str):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    if workload == "tiny":
        cfg = GPTNeoXConfig(vocab_size=512, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                            intermediate_size=1024, max_position_embeddings=512, tie_word_embeddings=False)
    else:  # EleutherAI/pythia-70m's shape
        cfg = GPTNeoXConfig(vocab_size=50304, hidden_size=512, num_hidden_layers=6, num_attention_heads=8,
                            intermediate_size=2048, max_position_embeddings=2048, rotary_pct=0.25,
                            tie_word_embeddings=False)
    return GPTNeoXForCausalLM(cfg).train()


def run_one(workload: str, layout: str, steps: int, threads: int) -> dict:
    from hybridpo.logprobs import response_logps

    torch.set_num_threads(threads)
    batches = (tiny_batches if workload == "tiny" else tldr_batches)(steps + 1, 8)
    model = build_model(workload)
    times, cpu_times, first_logps = [], [], None
    for prompts, responses in batches:
        start, cpu_start = time.perf_counter(), time.process_time()
        out = response_logps(model, prompts, responses, pad_id=PAD, layout=layout)
        out.logps.sum().backward()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
        model.zero_grad(set_to_none=True)
        if first_logps is None:
            first_logps = out.logps.detach().tolist()
    step = statistics.median(times[1:])  # the first step is a warm-up
    tokens = statistics.mean(
        sum(len(p) + len(r) for p, rs in zip(*b) for r in rs) for b in batches[1:]
    )
    return {
        "workload": workload, "layout": layout, "step_s": step, "pairs_per_s": 8 / step,
        "cpu_s": statistics.median(cpu_times[1:]),
        "tokens_per_s": tokens / step, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "first_logps": first_logps,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", choices=["tiny", "tldr", "all"], default="all")
    ap.add_argument("--steps", type=int, default=4, help="timed steps after one warm-up step")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    ap.add_argument("--one", nargs=2, metavar=("WORKLOAD", "LAYOUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(*args.one, args.steps, args.threads)))
        return 0
    workloads = ["tiny", "tldr"] if args.workload == "all" else [args.workload]
    print(f"{'workload':<8} {'layout':<7} {'step s':>8} {'cpu s':>8} {'pairs/s':>8} {'tokens/s':>9} "
          f"{'peak RSS GB':>11}")
    for w in workloads:
        res = {}
        for layout in ("padded", "packed"):
            cmd = [sys.executable, __file__, "--one", w, layout, "--steps", str(args.steps),
                   "--threads", str(args.threads)]
            r = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True,
                                          cwd=ROOT).stdout.strip().splitlines()[-1])
            res[layout] = r
            print(f"{w:<8} {layout:<7} {r['step_s']:>8.3f} {r['cpu_s']:>8.3f} {r['pairs_per_s']:>8.2f} "
                  f"{r['tokens_per_s']:>9.0f} {r['peak_rss_gb']:>11.2f}")
        diff = max(abs(a - b) for a, b in zip(res["padded"]["first_logps"], res["packed"]["first_logps"]))
        print(f"{w:<8} packed speed-up {res['padded']['step_s'] / res['packed']['step_s']:.2f}x wall, "
              f"{res['padded']['cpu_s'] / res['packed']['cpu_s']:.2f}x CPU time, "
              f"max |logp packed - padded| on the first batch {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
