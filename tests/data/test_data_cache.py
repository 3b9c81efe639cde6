"""The tokenised-data cache: a second identical load hits and returns identical examples; any
change to a setting, the source file or the tokenizer misses; writes are atomic."""

import json
import os
from pathlib import Path

import pytest

from hybridpo.data import DataConfig, load_tokenizer, prepare_preferences, prepare_prompts

SHARED = Path(__file__).resolve().parents[3] / "shared"
ROWS = [{"prompt": f"Question {i} about {i % 3}", "chosen": f" answer {i}", "rejected": f" wrong {i}"}
        for i in range(40)] + [{"prompt": "tie", "chosen": " x", "rejected": " x"}]


@pytest.fixture
def setup(tmp_path):
    src = tmp_path / "pairs.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return src, tmp_path / "cache"


def cfg(src, cache, **kw):
    return DataConfig(source=str(src), cache_dir=str(cache), eval_fraction=0.25, max_prompt_length=3, **kw)  # prompts are 4 tokens: all cut


def test_second_load_hits_and_is_identical(tok, setup):
    src, cache = setup
    first = prepare_preferences(cfg(src, cache), tok)
    assert not first.stats.from_cache
    files = list(cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".parquet"  # no temporary file left behind
    second = prepare_preferences(cfg(src, cache), tok)
    assert second.stats.from_cache
    assert second.train == first.train and second.eval == first.eval  # dataclass equality: every field
    assert second.stats.dropped_ties == 1 and second.stats.truncated_prompts == first.stats.truncated_prompts > 0
    assert [type(g) for g in (e.group for e in second.train)] == [str] * len(second.train)


def test_prompt_examples_round_trip_with_none(tok, setup, tmp_path):
    src = tmp_path / "prompts.jsonl"
    src.write_text("".join(json.dumps({"prompt": f"p{i}"}) + "\n" for i in range(5)))
    c = DataConfig(source=str(src), cache_dir=str(setup[1]), split_by="row")
    first = prepare_prompts(c, tok)
    second = prepare_prompts(c, tok)
    assert second.stats.from_cache and second.train == first.train
    assert second.train[0].reference is None and second.train[0].reference_ids is None and second.train[0].group is None


def test_changed_setting_misses(tok, setup):
    src, cache = setup
    prepare_preferences(cfg(src, cache), tok)
    changed = prepare_preferences(cfg(src, cache, max_response_length=2), tok)
    assert not changed.stats.from_cache
    assert all(len(e.chosen_ids) <= 2 for e in changed.train)
    assert len(list(cache.iterdir())) == 2
    # the cache's own settings are not part of the key
    assert prepare_preferences(cfg(src, cache, hf_cache_dir="/elsewhere"), tok).stats.from_cache


def test_changed_source_misses(tok, setup):
    src, cache = setup
    first = prepare_preferences(cfg(src, cache), tok)
    src.write_text(src.read_text().replace(" answer 1\"", " answer one\""))
    st = src.stat()
    os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a different mtime even on coarse clocks
    second = prepare_preferences(cfg(src, cache), tok)
    assert not second.stats.from_cache
    assert [e.chosen for e in second.train + second.eval] != [e.chosen for e in first.train + first.eval]


def test_changed_tokenizer_misses(tok, setup):
    src, cache = setup
    prepare_preferences(cfg(src, cache), tok)
    gpt2 = load_tokenizer(str(SHARED / "tokenizers" / "gpt2" / "tokenizer.json"))
    other = prepare_preferences(cfg(src, cache), gpt2)
    assert not other.stats.from_cache and other.train[0].chosen_ids[-1] == 50256


def test_damaged_cache_file_is_rebuilt(tok, setup):
    src, cache = setup
    first = prepare_preferences(cfg(src, cache), tok)
    (path,) = cache.iterdir()
    path.write_bytes(b"not parquet")
    again = prepare_preferences(cfg(src, cache), tok)
    assert not again.stats.from_cache and again.train == first.train
    assert prepare_preferences(cfg(src, cache), tok).stats.from_cache


def test_use_cache_off_writes_nothing(tok, setup):
    src, cache = setup
    p = prepare_preferences(cfg(src, cache, use_cache=False), tok)
    assert not p.stats.from_cache and not cache.exists()


def test_max_rows_leftovers_are_counted(tok, setup):
    src, cache = setup
    p = prepare_preferences(cfg(src, cache, max_rows=5, max_eval_rows=2, use_cache=False), tok)
    # 41 rows - 1 tie = 40 pairs, 30 train / 10 eval (eval_fraction 0.25 of 40 distinct prompts)
    assert (len(p.train), len(p.eval)) == (5, 2)
    assert p.stats.beyond_max_rows == (30 - 5) + (10 - 2)
