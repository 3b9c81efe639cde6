"""The benchmark workloads: the data issue 7 defines, and text that tokenizes to the same ids."""

import statistics

import pandas as pd
import pytest

from hybridpo.bench.workloads import (
    EOS_ID,
    TLDR_SUFFIX,
    _tldr_pairs,
    batches,
    build_pairs,
    get_workload,
    pythia_tokenizer,
    tiny_tokenizer,
)


def test_tiny_pairs_have_the_issues_lengths_and_round_trip_through_text():
    w = get_workload("tiny")
    pairs = build_pairs(w)
    assert len(pairs) == 512
    # uniform 48..78 has mean 63; responses uniform 28..48 (incl. EOS) have mean 38
    assert abs(statistics.mean(len(p.prompt_ids) for p in pairs) - 63) < 1.5
    assert abs(statistics.mean(len(p.chosen_ids) for p in pairs) - 38) < 1.5
    tok = tiny_tokenizer(w.vocab)
    assert len(tok) == 512
    for p in pairs[:50]:
        assert p.chosen_ids[-1] == EOS_ID and p.rejected_ids[-1] == EOS_ID
        assert all(2 <= t < 512 for t in p.prompt_ids)
        # TRL tokenizes prompt + response + eos text as one string; it must give our ids
        joined = tok(p.prompt + p.chosen + tok.eos_token, add_special_tokens=False)["input_ids"]
        assert joined == p.prompt_ids + p.chosen_ids


def test_tldr_pairs_match_the_issue():
    w = get_workload("tldr")
    tok = pythia_tokenizer()
    pairs = build_pairs(w, tok)
    assert len(pairs) == 256
    lens = [len(p.prompt_ids) for p in pairs]
    # issue 7: prompts 142-511 tokens, mean 334
    assert (min(lens), max(lens)) == (142, 511)
    assert round(statistics.mean(lens)) == 334
    assert all(p.prompt.endswith(TLDR_SUFFIX) for p in pairs)
    first = pairs[0]
    assert tok(first.prompt + first.rejected + tok.eos_token, add_special_tokens=False)["input_ids"] == (
        first.prompt_ids + first.rejected_ids
    )
    assert len(batches(w, pairs)) == 6 and len(batches(w, pairs)[0]) == 8


def test_bad_tldr_row_names_file_row_and_field(tmp_path):
    path = tmp_path / "bad.parquet"
    pd.DataFrame({"prompt": ["a", "b"], "chosen": ["TL;DR: x", "no prefix"], "rejected": ["TL;DR: y", "TL;DR: z"]}).to_parquet(path)
    w = get_workload("tldr")
    from dataclasses import replace

    with pytest.raises(ValueError, match=r"bad\.parquet: row 2, field 'chosen'"):
        _tldr_pairs(replace(w, n_pairs=2), tiny_tokenizer(), path)


def test_unknown_workload_fails_loudly():
    with pytest.raises(ValueError, match="choose from"):
        get_workload("huge")
