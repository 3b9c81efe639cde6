"""`hybridpo task gold --out DIR`: write the gold-reward task's files in the data loader's formats.

    hybridpo task gold --out runs/gold/data --train 512 --eval 64 --seed 0

writes DIR/sft_train.jsonl, DIR/sft_eval.jsonl ({"prompt", "completion"}: SFT rows; the eval file
is also `hybridpo eval --data`), DIR/prompts_train.jsonl ({"prompt"}: for online methods), and
model-free Bradley-Terry labelled pairs DIR/pairs_train.jsonl, DIR/pairs_eval.jsonl built from
`noisy_responses` around the references, restricted by the coverage knobs. (The full pipeline
labels samples of π_SFT instead.) Train and eval prompts are disjoint.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("task", choices=["gold"], help="the synthetic task")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--train", type=int, default=512, help="training prompts")
    p.add_argument("--eval", type=int, default=64, help="held-out prompts (disjoint from training)")
    p.add_argument("--seed", type=int, default=0, help="seeds prompts, candidate responses and BT labels")
    p.add_argument("--candidates", type=int, default=4, help="model-free candidate responses per prompt for pairs")
    p.add_argument("--pairs-per-prompt", type=int, default=1)
    p.add_argument("--max-distinct", type=int, default=None, help="coverage: distinct responses per prompt in pairs")
    p.add_argument("--max-words", type=int, default=None, help="coverage: only responses of at most this many words")
    p.add_argument("--bt-scale", type=float, default=5.0, help="Bradley-Terry inverse temperature on r*")


def run(args: argparse.Namespace) -> int:
    from hybridpo.experiments.gold.pairs import CoverageConfig, label_pairs, sft_rows, write_jsonl
    from hybridpo.experiments.gold.task import gold_reward, make_split, noisy_responses

    out = Path(args.out)
    train, held_out = make_split(args.train, args.eval, args.seed)
    write_jsonl(out / "sft_train.jsonl", sft_rows(train))
    write_jsonl(out / "sft_eval.jsonl", sft_rows(held_out))
    write_jsonl(out / "prompts_train.jsonl", ({"prompt": e.prompt} for e in train))
    cov = CoverageConfig(pairs_per_prompt=args.pairs_per_prompt, max_distinct=args.max_distinct,
                         max_words=args.max_words, bt_scale=args.bt_scale)
    rng = random.Random(args.seed)
    stats = {}
    for name, examples in (("train", train), ("eval", held_out)):
        rows, st = label_pairs([e.prompt for e in examples], [noisy_responses(e, args.candidates, rng) for e in examples],
                               gold_reward, cov, seed=args.seed)
        write_jsonl(out / f"pairs_{name}.jsonl", rows)
        stats[name] = st
    (out / "task.json").write_text(json.dumps({"task": "gold", **vars(args), "pairs": stats}, indent=2) + "\n")
    print(f"wrote {out}: {len(train)} train / {len(held_out)} eval prompts; pairs {json.dumps(stats)}")
    return 0
