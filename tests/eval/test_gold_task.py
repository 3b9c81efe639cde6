"""The gold-reward task: r* hand-checked on small examples, tokenisation, determinism, BT pairs, coverage."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from hybridpo.experiments.gold import task as gold
from hybridpo.experiments.gold.pairs import CoverageConfig, bt_probability, covered, label_pairs, sft_rows, write_jsonl
from hybridpo.experiments.gold.task import GoldTaskConfig, gold_reward, make_examples, noisy_responses

SHARED = Path(__file__).resolve().parents[3] / "shared"
TOKENIZER = SHARED / "tokenizers" / "pythia" / "tokenizer.json"
X = "items: cat dog* sun box** pen\nkey:"  # key items: box (2), dog (1); target " box dog"


def test_reference_is_the_marked_items_heavier_first():
    assert [(it.word, it.weight) for it in gold.parse_prompt(X)] == [
        ("cat", 0), ("dog", 1), ("sun", 0), ("box", 2), ("pen", 0)]
    assert gold.target_order(gold.parse_prompt(X)) == ["box", "dog"]
    # ties in weight keep prompt order
    assert gold.target_order(gold.parse_prompt("items: a* b** c* d\nkey:")) == ["b", "a", "c"]


@pytest.mark.parametrize(
    "response, recall, order, extras, words",
    [
        (" box dog", 1.0, 1.0, 0, 2),  # the reference
        (" dog box", 1.0, 0.0, 0, 2),  # right items, wrong order
        (" box", 2 / 3, 0.0, 0, 1),  # weight 2 of 3; the one pair is not both named
        (" dog", 1 / 3, 0.0, 0, 1),
        (" box dog cat", 1.0, 1.0, 1, 3),  # one unmarked item
        (" box box dog", 1.0, 1.0, 1, 3),  # a repeat is an extra
        (" box dog**", 2 / 3, 0.0, 1, 2),  # "dog**" is not the word "dog"
        ("", 0.0, 0.0, 0, 0),
        ("  box   dog  ", 1.0, 1.0, 0, 2),  # whitespace does not matter
    ],
)
def test_gold_reward_by_hand(response, recall, order, extras, words):
    s = gold.score(X, response)
    assert (s.recall, s.order, s.extras, s.words) == pytest.approx((recall, order, extras, words))
    # r* = recall + 0.5 order - 0.25 extras - 0.02 words (the defaults)
    assert s.reward == pytest.approx(recall + 0.5 * order - 0.25 * extras - 0.02 * words)


def test_reference_scores_the_maximum_and_example_values():
    assert gold_reward(X, " box dog") == pytest.approx(1 + 0.5 - 0.04)  # 1.46
    assert gold_reward(X, " dog box") == pytest.approx(1 - 0.04)  # 0.96: order is worth 0.5
    assert gold_reward(X, " box dog cat") == pytest.approx(1.5 - 0.25 - 0.06)  # 1.19
    assert gold_reward(X, "") == 0.0
    three = "items: a* b** c* d\nkey:"  # target b a c: 3 pairs (b,a) (b,c) (a,c)
    assert gold.score(three, " b c a").order == pytest.approx(2 / 3)  # (b,a) (b,c) right, (a,c) wrong
    rng = random.Random(0)
    for ex in make_examples(50, seed=3):  # no perturbation of the reference scores more
        best = gold_reward(ex.prompt, ex.reference)
        assert all(gold_reward(ex.prompt, y) <= best for y in noisy_responses(ex, 20, rng))


def test_examples_are_deterministic_distinct_and_valid():
    a, b, c = make_examples(200, seed=7), make_examples(200, seed=7), make_examples(200, seed=8)
    assert a == b and a != c
    assert len({e.prompt for e in a}) == 200
    cfg = GoldTaskConfig()
    for e in a:
        n_key = sum(it.weight > 0 for it in e.items)
        assert cfg.min_items <= len(e.items) <= cfg.max_items and cfg.min_key <= n_key <= cfg.max_key
        assert gold.parse_prompt(e.prompt) == e.items
    with pytest.raises(ValueError, match="min_key"):
        GoldTaskConfig(min_key=1)
    # the default draws from every word; n_words narrows the vocabulary (an easier task)
    assert make_examples(5, seed=7) == a[:5]
    small = make_examples(50, seed=7, cfg=GoldTaskConfig(n_words=10))
    assert {it.word for e in small for it in e.items} <= set(gold.WORDS[:10])
    with pytest.raises(ValueError, match="n_words"):
        GoldTaskConfig(n_words=4)


def test_capitalised_key_items_parse_to_the_same_task():
    cap = "items: cat Dog* sun Box** pen\nkey:"  # X with its marked items Capitalised
    assert gold.parse_prompt(cap) == gold.parse_prompt(X)
    for y in (" box dog", " dog box", " box dog cat", ""):  # r* reads the same lower-case words
        assert gold_reward(cap, y) == gold_reward(X, y)
    assert gold.score(cap, " Box dog").extras == 1  # the response is lower-case: " Box" is not an item
    plain, capd = make_examples(30, seed=5), make_examples(30, seed=5, cfg=GoldTaskConfig(capitalise_key=True))
    assert [e.items for e in capd] == [e.items for e in plain] and [e.reference for e in capd] == [e.reference for e in plain]
    for e in capd:  # Capitalised exactly when marked
        words = e.prompt.removeprefix("items:").removesuffix("\nkey:").split()
        assert [w[0].isupper() for w in words] == [it.weight > 0 for it in e.items]


def test_bad_prompt_is_named():
    with pytest.raises(ValueError, match="not a gold-task prompt.*hello"):
        gold_reward("hello", " box")
    with pytest.raises(ValueError, match="repeats an item"):
        gold_reward("items: cat* cat\nkey:", " cat")


def test_vocabulary_tokenises_compactly_with_pythia():
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(TOKENIZER))
    for i, w in enumerate(gold.WORDS):  # one token per item, one per mark
        assert len(tok.encode(" " + w)) == 1, w
        assert len(tok.encode(f" {w}*")) == 2 and len(tok.encode(f" {w}**")) == 2, w
        # Capitalised: one token, distinct from the lower-case one, for all but the last two words
        cap = tok.encode(" " + w.capitalize())
        assert (len(cap) == 1 and cap != tok.encode(" " + w)) == (i < len(gold.WORDS) - 2), w
        assert len(tok.encode(f" {w.capitalize()}**")) == len(cap) + 1, w
    ex = make_examples(1, seed=0)[0]
    n_items = len(ex.items)
    n_marked = sum(it.weight > 0 for it in ex.items)
    # "items" ":" + items + marks + "\n" "key" ":"  ==  the prompt's token count
    assert len(tok.encode(ex.prompt)) == 2 + n_items + n_marked + 3
    assert len(tok.encode(ex.reference)) == n_marked
    ex = make_examples(1, seed=0, cfg=GoldTaskConfig(n_words=44, capitalise_key=True))[0]
    assert len(tok.encode(ex.prompt)) == 2 + len(ex.items) + sum(it.weight > 0 for it in ex.items) + 3


def test_bradley_terry_probability():
    assert bt_probability(1.0, 1.0, 5.0) == 0.5
    assert bt_probability(1.0, 0.5, 2.0) == pytest.approx(1 / (1 + math.exp(-1.0)))
    assert bt_probability(1.0, 0.5, math.inf) == 1.0 and bt_probability(0.0, 0.5, math.inf) == 0.0


def test_label_pairs_follow_bradley_terry():
    ex = make_examples(1, seed=0)[0]
    good, bad = ex.reference, " " + " ".join(reversed(ex.reference.split()))  # differ by the order term
    diff = gold_reward(ex.prompt, good) - gold_reward(ex.prompt, bad)  # 0.5
    cfg = CoverageConfig(pairs_per_prompt=4000, bt_scale=2.0)
    rows, stats = label_pairs([ex.prompt], [[good, bad]], gold_reward, cfg, seed=0)
    share = sum(r["chosen"] == good for r in rows) / len(rows)
    p = bt_probability(diff, 0.0, 2.0)  # σ(1) = 0.731
    assert abs(share - p) < 4 * math.sqrt(p * (1 - p) / len(rows))  # within 4 binomial std errors
    assert stats["label_flips"] == len(rows) - sum(r["chosen"] == good for r in rows)
    hard, _ = label_pairs([ex.prompt], [[good, bad]], gold_reward, CoverageConfig(20, bt_scale=math.inf), seed=0)
    assert all(r["chosen"] == good and r["chosen_reward"] > r["rejected_reward"] for r in hard)
    again, _ = label_pairs([ex.prompt], [[good, bad]], gold_reward, cfg, seed=0)
    assert again == rows  # deterministic for a seed


def test_coverage_knobs_restrict_the_pairs():
    ys = [" a", " a", " b c", " d", " e f g", " h"]
    assert covered(ys, CoverageConfig()) == [" a", " b c", " d", " e f g", " h"]  # distinct, first-seen
    assert covered(ys, CoverageConfig(max_distinct=2)) == [" a", " b c"]
    assert covered(ys, CoverageConfig(max_words=1)) == [" a", " d", " h"]
    examples = make_examples(30, seed=1)
    rng = random.Random(0)
    responses = [noisy_responses(e, 8, rng) for e in examples]
    prompts = [e.prompt for e in examples]
    rows, stats = label_pairs(prompts, responses, gold_reward, CoverageConfig(pairs_per_prompt=3, max_distinct=2), 0)
    for x, ys in zip(prompts, responses):  # every pair uses only the first two distinct responses
        allowed = set(covered(ys, CoverageConfig(max_distinct=2)))
        assert all({r["chosen"], r["rejected"]} == allowed for r in rows if r["prompt"] == x)
    rows, stats = label_pairs(prompts, responses, gold_reward, CoverageConfig(max_words=2), 0)
    assert all(len(r["chosen"].split()) <= 2 and len(r["rejected"].split()) <= 2 for r in rows)
    assert stats["pairs"] + stats["skipped_prompts"] == 30  # prompts with < 2 short responses are counted
    with pytest.raises(ValueError, match="max_distinct"):
        CoverageConfig(max_distinct=1)


def test_jsonl_files_load_through_the_data_layer(tmp_path):
    from hybridpo.data import DataConfig, load_preferences, load_prompts, load_tokenizer

    tok = load_tokenizer(str(TOKENIZER))
    examples = make_examples(20, seed=0)
    write_jsonl(tmp_path / "sft.jsonl", sft_rows(examples))
    rows, _ = label_pairs([e.prompt for e in examples], [noisy_responses(e, 4, random.Random(1)) for e in examples],
                          gold_reward, CoverageConfig(), seed=0)
    write_jsonl(tmp_path / "pairs.jsonl", rows)
    first = json.loads((tmp_path / "sft.jsonl").read_text().splitlines()[0])
    assert first == {"prompt": examples[0].prompt, "completion": examples[0].reference}
    sft, _ = load_prompts(DataConfig(source=str(tmp_path / "sft.jsonl"), use_cache=False), tok)
    assert len(sft) == 20 and sft[0].reference == examples[0].reference
    # the boundary is exact: prompt ids + reference ids (+ EOS) == the ids of the whole text
    assert sft[0].prompt_ids + sft[0].reference_ids[:-1] == tok.encode(examples[0].prompt + examples[0].reference)
    pairs, _ = load_preferences(DataConfig(source=str(tmp_path / "pairs.jsonl"), use_cache=False), tok)
    assert len(pairs) == len(rows) and pairs[0].chosen == rows[0]["chosen"]
