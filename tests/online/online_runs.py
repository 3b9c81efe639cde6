"""Helpers of the online-method runs: `train(...)` runs `hybridpo train` in-process on a tiny config."""

from __future__ import annotations

import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
PYTHIA_TOKENIZER = SHARED / "tokenizers" / "pythia" / "tokenizer.json"

# Small and fast on 2 CPU cores: 16 TL;DR pairs, prompts cut to their last 32 tokens, batch 4,
# constant learning rate without warm-up (so step 1 already moves the weights).
FAST = [
    "run.progress=false", "data.max_prompt_length=32", "data.max_response_length=16", "data.max_rows=16",
    "data.max_eval_rows=4", "run.eval_examples=4", "run.eval_every=0", "optim.batch_size=4",
    "optim.schedule=constant", "optim.warmup_steps=0",
]


def train(config: str, out: Path, *overrides: str) -> Path:
    """`hybridpo train --config configs/tiny/<config> ...` in this process; returns the run folder."""
    from hybridpo.cli import main

    rc = main(["train", "--config", str(REPO / "configs" / "tiny" / config), f"run.out_dir={out}", *FAST, *overrides])
    assert rc == 0
    return out


def rows(run: Path) -> list[dict]:
    """The training rows of metrics.jsonl (evaluation rows have only eval/ keys)."""
    all_rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in all_rows if "loss" in r]
