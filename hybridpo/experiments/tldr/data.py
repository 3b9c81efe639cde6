"""The TL;DR experiment's data: the shared human comparisons, split by post, written as the raw
rows the data layer reads (rendered by the `tldr` recipe's settings: "{post}\\nTL;DR:" + " summary").

Only posts whose templated prompt fits `max_prompt_length` tokens are used (left out, never
truncated: a summary of a cut post would name what the model cannot see), and only comparisons
whose two summaries fit `max_response_length` tokens with EOS. Posts are ordered by a hash of
their text (not file order) and split into three disjoint sets:

    eval    the first n_eval posts: evaluation prompts with their human reference (the summary that
            won most of the post's comparisons, wins minus losses, first seen on ties) and one pair
            each (held-out pair accuracy; the data's own responses in the coverage diagnostics)
    judge   the next n_judge_posts: pairs that train the evaluator reward model and nothing else
    train   the rest: SFT rows (their chosen summaries, best first, round-robin over posts) and the
            n_train training pairs (one per post in hash order, then a second round)

Files in DIR: sft_train.jsonl, pairs_train.jsonl, prompts_train.jsonl (the training pairs' posts,
for the online methods), pairs_judge.jsonl, pairs_eval.jsonl, prompts_eval.jsonl, split.json.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from pathlib import Path

from hybridpo.data.recipes import tldr_settings

RESPONSE_PREFIX = "TL;DR:"
FILES = ("sft_train", "pairs_train", "prompts_train", "pairs_judge", "pairs_eval", "prompts_eval")


def rendering(max_prompt_length: int, max_response_length: int) -> dict:
    """The data section every run of the experiment shares: the `tldr` recipe's rendering."""
    recipe = tldr_settings()
    return {
        "format": "auto", "prompt_template": recipe["prompt_template"], "response_prefix": recipe["response_prefix"],
        "normalize_response_space": True, "max_prompt_length": max_prompt_length,
        "max_response_length": max_response_length, "on_overlong": "truncate", "use_cache": False,
    }


def summary(text: str) -> str:
    """The summary of a "TL;DR:  ..." response string, stripped."""
    return (text[len(RESPONSE_PREFIX):] if text.startswith(RESPONSE_PREFIX) else text).strip()


def _order_key(post: str) -> str:
    return hashlib.sha1(post.encode("utf-8")).hexdigest()


def write_split(out: Path, tok, *, source: str, max_prompt_length: int, max_response_length: int, n_eval: int,
                n_judge_posts: int, n_judge_pairs: int, n_sft: int, n_train: int, progress=lambda s: None) -> Path:
    """Every file of the module docstring in `out` (kept if split.json exists); returns `out`."""
    if (out / "split.json").exists():
        return out
    import pandas as pd

    template = tldr_settings()["prompt_template"]
    rows_by_post: dict[str, list[dict]] = defaultdict(list)
    for row in pd.read_parquet(source).to_dict("records"):
        rows_by_post[row["prompt"]].append(row)
    fits = {}
    for post in rows_by_post:
        fits[post] = len(tok.encode(template.format(prompt=post))) <= max_prompt_length

    def short(text: str) -> bool:  # the normalised response and its EOS fit
        return len(tok.encode(" " + summary(text))) + 1 <= max_response_length

    posts = sorted((p for p in rows_by_post if fits[p]), key=_order_key)
    pairs = {p: [r for r in rows_by_post[p] if short(r["chosen"]) and short(r["rejected"])
                 and summary(r["chosen"]) != summary(r["rejected"])] for p in posts}
    posts = [p for p in posts if pairs[p]]
    if len(posts) < n_eval + n_judge_posts + 1:
        raise ValueError(f"{source}: only {len(posts)} posts fit {max_prompt_length} prompt tokens; "
                         f"n_eval + n_judge_posts = {n_eval + n_judge_posts}")
    eval_posts, judge_posts = posts[:n_eval], posts[n_eval : n_eval + n_judge_posts]
    train_posts = posts[n_eval + n_judge_posts :]

    def pair_row(r: dict) -> dict:
        return {"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}

    out.mkdir(parents=True, exist_ok=True)
    files = {
        "prompts_eval": [{"prompt": p, "completion": RESPONSE_PREFIX + " " + reference(pairs[p])} for p in eval_posts],
        "pairs_eval": [pair_row(pairs[p][0]) for p in eval_posts],
        "pairs_judge": [pair_row(r) for r in round_robin([pairs[p] for p in judge_posts], n_judge_pairs)],
        "sft_train": [{"prompt": p, "completion": RESPONSE_PREFIX + " " + s}
                      for p, s in round_robin([[(p, s) for s in ranked(pairs[p])] for p in train_posts], n_sft)],
        "pairs_train": [pair_row(r) for r in round_robin([pairs[p] for p in train_posts], n_train)],
    }
    files["prompts_train"] = [{"prompt": p} for p in dict.fromkeys(r["prompt"] for r in files["pairs_train"])]
    for name, rows in files.items():
        (out / f"{name}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    split = {"source": source, "max_prompt_length": max_prompt_length, "max_response_length": max_response_length,
             "posts_total": len(rows_by_post), "posts_that_fit": len(posts),
             "posts": {"eval": len(eval_posts), "judge": len(judge_posts), "train": len(train_posts)},
             "rows": {name: len(rows) for name, rows in files.items()}}
    (out / "split.json").write_text(json.dumps(split, indent=2) + "\n")
    progress(f"data: {len(posts)} of {len(rows_by_post)} posts fit {max_prompt_length} tokens; "
             + ", ".join(f"{k} {v}" for k, v in split["rows"].items()))
    return out


def ranked(rows: list[dict]) -> list[str]:
    """A post's distinct summaries that were chosen at least once, by wins minus losses (first seen on ties)."""
    score: dict[str, int] = {}
    chosen: set[str] = set()
    for r in rows:
        c, j = summary(r["chosen"]), summary(r["rejected"])
        score[c] = score.get(c, 0) + 1
        score[j] = score.get(j, 0) - 1
        chosen.add(c)
    order = list(score)
    return sorted((s for s in order if s in chosen), key=lambda s: (-score[s], order.index(s)))


def reference(rows: list[dict]) -> str:
    """The post's human reference: its best summary by wins minus losses."""
    return ranked(rows)[0]


def round_robin(groups: list[list], n: int) -> list:
    """Up to n items: the first of every group, then the second of every group, ..."""
    out, depth = [], 0
    while len(out) < n and any(depth < len(g) for g in groups):
        for g in groups:
            if depth < len(g) and len(out) < n:
                out.append(g[depth])
        depth += 1
    return out
