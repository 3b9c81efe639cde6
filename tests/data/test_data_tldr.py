"""The TL;DR recipe on the shared file: the "\nTL;DR:" / " summary" join, a natural BPE boundary,
and a train/eval split by post with no post in both."""

from pathlib import Path

import pandas as pd
import pytest

from hybridpo.data import prepare_preferences, prepare_prompts, split_by_group, tldr

SHARED = Path(__file__).resolve().parents[3] / "shared"
TLDR = SHARED / "data" / "tldr" / "tldr_comparisons_10k.parquet"


@pytest.fixture(scope="module")
def prepared(tok):
    return prepare_preferences(tldr(use_cache=False), tok)


@pytest.fixture(scope="module")
def frame():
    return pd.read_parquet(TLDR)


def test_no_post_in_both_splits(prepared, frame):
    train_posts = {e.group for e in prepared.train}
    eval_posts = {e.group for e in prepared.eval}
    assert not train_posts & eval_posts
    n_posts = frame["prompt"].nunique()  # 1,653
    assert len(train_posts) + len(eval_posts) == n_posts
    assert len(eval_posts) == round(0.1 * n_posts)  # eval_fraction 0.1 of the posts, not of the rows
    # every row is kept (no ties or empty summaries in this file), each on its post's side
    assert len(prepared.train) + len(prepared.eval) == len(frame) == prepared.stats.rows_read
    posts_in_eval = frame["prompt"].isin(eval_posts)
    assert len(prepared.eval) == posts_in_eval.sum()


def test_prompt_and_response_join(prepared, frame):
    first = frame.iloc[0]
    ex = next(e for e in prepared.train + prepared.eval if e.group == first["prompt"]
              and e.rejected == " " + first["rejected"][len("TL;DR:"):].strip())
    assert ex.prompt == first["prompt"] + "\nTL;DR:"
    assert first["chosen"].startswith("TL;DR:  ")  # the file: "TL;DR:" + " " + " summary"
    assert ex.chosen == " " + first["chosen"][len("TL;DR:"):].strip()  # one space, then the summary
    for e in prepared.train[:500]:
        assert e.prompt.endswith("\nTL;DR:")
        for r in (e.chosen, e.rejected):
            assert r.startswith(" ") and not r.startswith("  ") and "TL;DR:" not in r[:8]


def test_boundary_is_the_natural_bpe_split(prepared, tok):
    """tok(prompt) + tok(response) == tok(prompt + response) on real rows: no merge crosses the
    boundary, so the separate tokenisation is also what the joined text would give."""
    checked = 0
    for e in prepared.train[:300]:
        if e.chosen_ids[-1:] != [0] or len(e.prompt_ids) == 512:
            continue  # cut by truncation
        joined = tok(e.prompt + e.chosen, add_special_tokens=False)["input_ids"]
        assert e.prompt_ids + e.chosen_ids[:-1] == joined
        checked += 1
    assert checked > 250


def test_split_is_seeded_and_stable_under_reordering(prepared):
    import random

    rows = prepared.train + prepared.eval
    random.Random(0).shuffle(rows)
    train, eval_ = split_by_group(rows, 0.1, seed=0)  # the recipe's fraction and seed
    assert {e.group for e in eval_} == {e.group for e in prepared.eval}
    _, eval_1 = split_by_group(rows, 0.1, seed=1)
    assert {e.group for e in eval_1} != {e.group for e in prepared.eval}


def test_split_by_group_unit():
    class Item:
        def __init__(self, group):
            self.group = group

    items = [Item(g) for g in "aabbbcdddde"] + [Item(None), Item(None)]
    train, eval_ = split_by_group(items, 0.5, seed=0)
    assert len(train) + len(eval_) == len(items)
    assert not {i.group for i in train if i.group} & {i.group for i in eval_ if i.group}
    units = 5 + 2  # groups a-e, plus each None item on its own
    n_eval_units = len({i.group for i in eval_ if i.group}) + sum(i.group is None for i in eval_)
    assert n_eval_units == round(0.5 * units)


def test_sft_prompts_from_tldr_chosen(tok, frame):
    p = prepare_prompts(tldr(use_cache=False), tok)
    s = p.stats
    # exact repeats of (post, chosen summary) collapse to one SFT example, each one counted
    distinct = frame.assign(c=frame["chosen"].str[len("TL;DR:"):].str.strip())[["prompt", "c"]].drop_duplicates()
    assert s.train_examples + s.eval_examples == len(distinct)
    assert s.dropped_duplicates == len(frame) - len(distinct)
    assert not {e.group for e in p.train} & {e.group for e in p.eval}
    ex = p.train[0]
    assert ex.reference.startswith(" ") and ex.reference_ids[-1] == 0
