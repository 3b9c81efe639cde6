"""DPO throughput on a fixed tiny workload: pairs/s and tokens/s through the real training loop.

Not a test (timings depend on the machine and its load). The workload: a randomly initialised
`small` Pythia-architecture model (4 layers, width 128, the real 50,304-row vocabulary, seed 0),
the first 64 shared TL;DR training pairs (prompts cut to their last 128 tokens, responses to 48),
8 pairs per step, a frozen-copy reference computed every step (no caching), AdamW, fp32.
Each step is timed by the loop itself (metrics.jsonl `tokens_per_s`); the first 2 steps are
warm-up and not counted.

    .venv/bin/python bench/dpo_tiny.py                 # CPU, ~1 minute
    .venv/bin/python bench/dpo_tiny.py --layout padded # the plain log-prob layout, for comparison
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOKENIZER = REPO.parent / "shared" / "tokenizers" / "pythia" / "tokenizer.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps (the first 2 are warm-up)")
    parser.add_argument("--batch", type=int, default=8, help="preference pairs per step")
    parser.add_argument("--size", default="small", choices=["tiny", "small", "pythia-70m"])
    parser.add_argument("--layout", default="packed", choices=["packed", "padded"])
    args = parser.parse_args()

    from hybridpo.config import config_from_dict
    from hybridpo.loop import train
    from hybridpo.zoo import init_model

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = init_model("gpt-neox", args.size, str(TOKENIZER), Path(tmp) / "model", seed=0)
        cfg = config_from_dict({
            "method": "dpo",
            "method_args": {"beta": 0.1, "precompute_ref_logps": False},
            "model": {"name_or_path": str(model_dir), "reference": "copy"},
            "data": {"recipe": "tldr", "max_prompt_length": 128, "max_response_length": 48, "max_rows": 64, "max_eval_rows": 1},
            "optim": {"lr": 1e-4, "batch_size": args.batch, "max_steps": args.steps, "schedule": "constant"},
            "run": {"out_dir": str(Path(tmp) / "run"), "progress": False, "logprob_layout": args.layout, "eval_examples": 1},
        }, where="bench/dpo_tiny.py")
        train(cfg)
        rows = [json.loads(l) for l in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines()]
    timed = [r for r in rows if "loss" in r][2:]
    tokens_per_s = statistics.median(r["tokens_per_s"] for r in timed)  # prompt + chosen + rejected tokens
    step_s = statistics.median(r["step_time_s"] for r in timed)
    print(f"workload: {args.size} model, TL;DR pairs (prompt<=128, response<=48), {args.batch} pairs/step, layout={args.layout}")
    print(f"median over {len(timed)} steps: {step_s * 1000:.0f} ms/step, {args.batch / step_s:.1f} pairs/s, {tokens_per_s:.0f} tokens/s")


if __name__ == "__main__":
    main()
