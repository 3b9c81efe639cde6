"""Ready-made data settings for the two shared sets (read in place from ../shared).

A recipe is a plain mapping of DataConfig fields (`RECIPES[name](shared) -> dict`); this module
imports nothing of the data layer but its error type, so `DataConfig.from_dict` (config.py) can
resolve `recipe: tldr` without an import cycle. `hybridpo.data.tldr(**overrides)` and
`recipe_config(name, **overrides)` (config.py) build the DataConfig.

TL;DR (`../shared/data/tldr/tldr_comparisons_10k.parquet`). Rows: `prompt` = "SUBREDDIT: ...
TITLE: ... POST: ..." (no trailing "TL;DR:"); `chosen` / `rejected` = "TL;DR: " followed by the
summary, which in the file itself starts with a space ("TL;DR:  Going on a date..."; 9,994 of
10,000). Joining: the prompt becomes `prompt + "\nTL;DR:"` (the template of the paper's TL;DR
setting) and each response drops its "TL;DR:" and becomes exactly one space + the stripped
summary (" Going on a date..."), so prompt + response reads "...\nTL;DR: Going on a date..." and
the space sits at the start of the response, where byte-level BPE puts it (see tokenize.py).
The split is by post: group = the raw prompt, 10% of the 1,653 posts held out.
Lengths: context 512 as in the paper's TL;DR runs; 251 of 1,653 templated prompts exceed 448
tokens and 3 exceed 512 (Pythia tokenizer), responses are at most 128 tokens + EOS.

UltraFeedback (`../shared/data/ultrafeedback/{train_1000,eval_200}.jsonl`): plain-string
`prompt` / `chosen` / `rejected`, rendered as one user turn + one assistant reply with the
tokenizer's chat template (the paper fine-tunes Llama-3-8B-Instruct); with a base tokenizer that
has none, pass `chat_template="builtin"`. The files hold 5 ties (the shared README's count):
4 in train (rows 307, 656, 911, 998) and 1 in eval; train rows 479 and 834 have an empty response.
"""

from __future__ import annotations

from pathlib import Path

from hybridpo.data.examples import DataError


def shared_dir() -> Path:
    """`../shared` next to the repository (this file is repo/hybridpo/data/recipes.py)."""
    return Path(__file__).resolve().parents[3] / "shared"


def tldr_settings(shared: str | Path | None = None) -> dict:
    root = Path(shared) if shared else shared_dir()
    return dict(
        source=str(root / "data" / "tldr" / "tldr_comparisons_10k.parquet"),
        format="standard",
        prompt_template="{prompt}\nTL;DR:",
        response_prefix="TL;DR:",
        normalize_response_space=True,
        split_by="prompt",  # the post: no post in both splits
        eval_fraction=0.1,
        max_prompt_length=512,
        max_response_length=128,
    )


def ultrafeedback_settings(shared: str | Path | None = None) -> dict:
    root = Path(shared) if shared else shared_dir()
    return dict(
        source=str(root / "data" / "ultrafeedback" / "train_1000.jsonl"),
        eval_source=str(root / "data" / "ultrafeedback" / "eval_200.jsonl"),
        format="standard",
        as_chat=True,
        chat_template="tokenizer",
        max_prompt_length=512,
        max_length=1024,
    )


RECIPES = {"tldr": tldr_settings, "ultrafeedback": ultrafeedback_settings}  # name -> DataConfig fields


def recipe_settings(name: str, shared: str | Path | None = None) -> dict:
    """The DataConfig fields of recipe `name` (`data.recipe` in a config)."""
    if name not in RECIPES:
        raise DataError(f"data.recipe={name!r}; choose from {sorted(RECIPES)}")
    return RECIPES[name](shared)
