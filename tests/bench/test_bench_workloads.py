"""The benchmark workloads: the data each workload defines (hybridpo.bench.workloads), and text that tokenizes to the same ids."""

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


def test_tiny_pairs_have_the_defined_lengths_and_round_trip_through_text():
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


def test_tldr_pairs_have_the_defined_lengths():
    w = get_workload("tldr")
    tok = pythia_tokenizer()
    pairs = build_pairs(w, tok)
    assert len(pairs) == 256
    lens = [len(p.prompt_ids) for p in pairs]
    # the first 256 shared TL;DR pairs: prompts 142-511 tokens, mean 334
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


def test_smollm2_pairs_fit_512_and_trl_tokenizes_their_text_back(smollm2_dir):
    """The first 64 UltraFeedback pairs whose prompt + longer response fit 512 tokens under
    SmolLM2's chat template (prompts 36-486, mean 128; responses 2-451, EOS included); TRL joins
    prompt + response text + EOS and tokenizes it: it must give exactly these ids."""
    from hybridpo.bench.workloads import load_tokenizer

    w = get_workload("smollm2-dpo")
    tok = load_tokenizer(w)
    pairs = build_pairs(w, tok)
    assert len(pairs) == 64 and len(batches(w, pairs)) == 8
    assert all(len(p.prompt_ids) + max(len(p.chosen_ids), len(p.rejected_ids)) <= 512 for p in pairs)
    lens = [len(p.prompt_ids) for p in pairs]
    assert (min(lens), max(lens), round(statistics.mean(lens))) == (36, 486, 128)
    for p in pairs:
        assert p.chosen_ids[-1] == tok.eos_token_id == 2  # <|im_end|>
        for ids, text in ((p.chosen_ids, p.chosen), (p.rejected_ids, p.rejected)):
            assert tok(p.prompt + text + tok.eos_token, add_special_tokens=False)["input_ids"] == p.prompt_ids + ids


def test_the_gpu_check_needs_only_the_checkpoints_config_and_tokenizer(smollm2_dir, tmp_path):
    """docs/bench/gpu_check.sh carries config + tokenizer, no weights: --model FOLDER --random-weights."""
    import shutil
    from dataclasses import replace

    from hybridpo.bench.workloads import build_model, load_tokenizer

    for f in smollm2_dir.iterdir():
        if f.suffix in (".json", ".jinja") and f.name != "hybridpo_source.json":
            shutil.copy(f, tmp_path / f.name)
    w = replace(get_workload("smollm2-dpo"), model=str(tmp_path), weights="random")
    model = build_model(w)
    assert (model.config.num_hidden_layers, model.config.hidden_size, model.config.vocab_size) == (30, 576, 49152)
    assert len(build_pairs(w, load_tokenizer(w))) == 64
