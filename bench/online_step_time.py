"""Step time of dpo vs hypo vs rlhf on one tiny workload, and the share of it spent sampling.

Not a test (timings depend on the machine and its load). The workload, the same for the three
methods: a randomly initialised `tiny` Pythia-architecture model (2 layers, width 64, the real
50,304-row vocabulary, seed 0), the first 32 shared TL;DR training pairs (prompts cut to their last
128 tokens, responses to 48), 8 prompts per step, a frozen-copy reference, AdamW, fp32, through the
real training loop (`hybridpo.loop.train`, as `hybridpo train` runs it).
  dpo   the 8 offline pairs (reference log-probs computed every step, no cache)
  hypo  the same 8 pairs + k = 2 samples per prompt of up to 53 new tokens (the paper's TL;DR
        budget), pairs and samples in one packed forward per model
  rlhf  k = 4 samples per prompt of up to 53 new tokens, scored by a reward model (a `rm` run of 2
        steps from the same tiny model), RLOO
A random model rarely emits EOS, so nearly every sample runs the full 53 tokens: a worst case for
the sampling share. Each step is timed by the loop itself (metrics.jsonl `step_time_s`,
`sample_time_share`); the first 2 steps are warm-up and not counted.

Measured 2026-11-24 on the shared 2-core CPU box under heavy load from other jobs (load ~11), so
the absolute times are inflated; medians of steps 3-6: dpo 6.5 s/step; hypo 32.3 s (4.9x dpo,
74% of it sampling); rlhf 33.1 s (5.1x dpo, 71% sampling); every sample ran the full 53 tokens.

    .venv/bin/python bench/online_step_time.py            # CPU, a few minutes
    .venv/bin/python bench/online_step_time.py --size small --new-tokens 16
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOKENIZER = REPO.parent / "shared" / "tokenizers" / "pythia" / "tokenizer.json"


def run(method: str, method_args: dict, model_dir: Path, out: Path, args, reward_model: str = "") -> list[dict]:
    from hybridpo.config import config_from_dict
    from hybridpo.loop import train

    cfg = config_from_dict({
        "method": method,
        "method_args": method_args,
        "model": {"name_or_path": str(model_dir), "reference": "copy", "reward_model": reward_model},
        "data": {"recipe": "tldr", "max_prompt_length": 128, "max_response_length": 48, "max_rows": 32, "max_eval_rows": 1},
        "optim": {"lr": 1e-4, "batch_size": args.batch, "max_steps": args.steps, "schedule": "constant"},
        "run": {"out_dir": str(out), "progress": False, "eval_examples": 1, "seed": 0},
    }, where="bench/online_step_time.py")
    train(cfg)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "loss" in r][2:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per method (the first 2 are warm-up)")
    parser.add_argument("--batch", type=int, default=8, help="prompts (pairs) per step")
    parser.add_argument("--new-tokens", type=int, default=53, help="sample length cap for hypo and rlhf")
    parser.add_argument("--size", default="tiny", choices=["tiny", "small", "pythia-70m"])
    args = parser.parse_args()

    from hybridpo.zoo import init_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = init_model("gpt-neox", args.size, str(TOKENIZER), tmp / "model", seed=0)
        rm_args = argparse.Namespace(**{**vars(args), "steps": 2})
        run("rm", {}, model_dir, tmp / "rm", rm_args)
        sampling = {"max_new_tokens": args.new_tokens, "temperature": 1.0}
        timed = {
            "dpo": run("dpo", {"beta": 0.1, "precompute_ref_logps": False}, model_dir, tmp / "dpo", args),
            "hypo": run("hypo", {"beta": 0.1, "lam": 0.1, "k": 2, **sampling}, model_dir, tmp / "hypo", args),
            "rlhf": run("rlhf", {"beta": 0.05, "k": 4, **sampling}, model_dir, tmp / "rlhf", args,
                        reward_model=str(tmp / "rm" / "final")),
        }
    print(f"workload: {args.size} model, TL;DR prompts (<=128 tokens), {args.batch} prompts/step, "
          f"samples of <= {args.new_tokens} tokens; median over {args.steps - 2} steps")
    print(f"{'method':<8}{'ms/step':>10}{'x dpo':>8}{'sampling share':>16}{'mean sample length':>20}")
    dpo_s = statistics.median(r["step_time_s"] for r in timed["dpo"])
    for name, rows in timed.items():
        step_s = statistics.median(r["step_time_s"] for r in rows)
        share = statistics.median(r.get("sample_time_share", 0.0) for r in rows)
        length = statistics.mean(r["response_length"] for r in rows) if "response_length" in rows[0] else float("nan")
        print(f"{name:<8}{step_s * 1000:>10.0f}{step_s / dpo_s:>8.2f}{share:>16.1%}{length:>20.1f}")


if __name__ == "__main__":
    main()
