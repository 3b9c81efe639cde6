"""Offline data for a gold-reward task: Bradley-Terry labelled pairs with a coverage knob, and JSONL.

Pairs are built from GIVEN responses (samples of π_SFT in the pipeline, `noisy_responses` without a
model) and labelled by the Bradley-Terry model of paper Eq. 3 on the gold reward:

    P(y1 ≻ y2 | x) = σ(bt_scale · (r*(x, y1) - r*(x, y2)))

so the offline data's preferences are noisy exactly as the theory assumes, with a known reward.

Coverage (the paper's point, §4): offline contrastive methods only learn where the offline data
is. Two knobs shrink that region:
- `max_distinct`: only the first m DISTINCT responses of each prompt enter pairs (how many
  distinct responses per prompt the data covers; m = 2 gives one response pair per prompt);
- `max_words`: only responses of at most this many words enter pairs (restricts the data to a
  region of response space: short responses; π may still put mass on longer ones).

Files are the standard TRL rows the data loader reads: `{"prompt", "chosen", "rejected"}` for
pairs, `{"prompt", "completion"}` for SFT rows, `{"prompt"}` for prompt-only rows. Extra fields
(the gold rewards of chosen and rejected) ride along; the loader ignores them.
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable


@dataclass
class CoverageConfig:
    pairs_per_prompt: int = 1  # labelled pairs drawn per prompt (from its covered responses)
    max_distinct: int | None = None  # distinct responses per prompt that pairs may use (>= 2); None = all
    max_words: int | None = None  # only responses with at most this many words enter pairs; None = any length
    bt_scale: float = 5.0  # Bradley-Terry inverse temperature on r*: larger = less label noise; inf = always the better one

    def __post_init__(self) -> None:
        if self.pairs_per_prompt < 1:
            raise ValueError(f"coverage.pairs_per_prompt={self.pairs_per_prompt}; must be >= 1")
        if self.max_distinct is not None and self.max_distinct < 2:
            raise ValueError(f"coverage.max_distinct={self.max_distinct}; a pair needs >= 2 distinct responses")
        if self.max_words is not None and self.max_words < 0:
            raise ValueError(f"coverage.max_words={self.max_words}; must be >= 0 or None")
        if not self.bt_scale > 0:
            raise ValueError(f"coverage.bt_scale={self.bt_scale}; must be > 0")


def covered(responses: list[str], cfg: CoverageConfig) -> list[str]:
    """The responses of one prompt that pairs may use: distinct, in first-seen order, within the region."""
    out: list[str] = []
    for y in responses:
        if y in out or (cfg.max_words is not None and len(y.split()) > cfg.max_words):
            continue
        out.append(y)
        if cfg.max_distinct is not None and len(out) == cfg.max_distinct:
            break
    return out


def bt_probability(r1: float, r2: float, bt_scale: float) -> float:
    """P(y1 ≻ y2) = σ(bt_scale (r1 - r2)), paper Eq. 3's model; bt_scale = inf gives 1, 0.5 or 0."""
    z = bt_scale * (r1 - r2)
    if math.isinf(bt_scale) or abs(z) > 700:
        return 1.0 if r1 > r2 else 0.0 if r1 < r2 else 0.5
    return 1.0 / (1.0 + math.exp(-z))


def label_pairs(
    prompts: list[str],
    responses: list[list[str]],
    reward: Callable[[str, str], float],
    cfg: CoverageConfig,
    seed: int,
) -> tuple[list[dict], dict]:
    """Preference rows from `responses[i]` (candidates for `prompts[i]`), labelled by BT on `reward`.

    Returns (rows, stats); stats counts prompts skipped for having < 2 covered responses, so
    nothing disappears silently. Deterministic for a seed.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but responses for {len(responses)}")
    rng = random.Random(seed)
    rows: list[dict] = []
    stats = {"prompts": len(prompts), "skipped_prompts": 0, "pairs": 0, "covered_responses": 0, "label_flips": 0}
    for x, ys in zip(prompts, responses):
        pool = covered(ys, cfg)
        stats["covered_responses"] += len(pool)
        if len(pool) < 2:
            stats["skipped_prompts"] += 1
            continue
        for _ in range(cfg.pairs_per_prompt):
            y1, y2 = rng.sample(pool, 2)
            r1, r2 = reward(x, y1), reward(x, y2)
            first_wins = rng.random() < bt_probability(r1, r2, cfg.bt_scale)
            (yc, rc), (yr, rr) = ((y1, r1), (y2, r2)) if first_wins else ((y2, r2), (y1, r1))
            stats["label_flips"] += int(rc < rr)  # BT noise chose the worse response
            rows.append({"prompt": x, "chosen": yc, "rejected": yr, "chosen_reward": rc, "rejected_reward": rr})
    stats["pairs"] = len(rows)
    return rows, stats


def sft_rows(examples: Iterable) -> list[dict]:
    """`{"prompt", "completion"}` rows (the data loader's SFT format) from task examples."""
    return [{"prompt": e.prompt, "completion": e.reference} for e in examples]


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    """Write rows one JSON object per line, atomically (a temp file renamed into place)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
    return path
