"""Every kind of source yields the same examples: JSONL, JSON, parquet, CSV, a `save_to_disk`
folder and a folder loaded through `datasets.load_dataset` (the hub-name code path, offline);
`load_tokenizer` from a bare tokenizer.json, a tokenizer folder, with eos/pad set."""

import json
from pathlib import Path

import pandas as pd
import pytest

from hybridpo.data import DataConfig, DataError, load_preferences, load_tokenizer

SHARED = Path(__file__).resolve().parents[3] / "shared"
PYTHIA = SHARED / "tokenizers" / "pythia" / "tokenizer.json"
ROWS = [{"prompt": "2+2=", "chosen": " 4", "rejected": " 5"},
        {"prompt": "Capital of France?", "chosen": " Paris.", "rejected": " Lyon."},
        {"prompt": "Capital of France?", "chosen": " Paris", "rejected": " Nice"}]


def load(tok, source, **kw):
    train, eval_ = load_preferences(DataConfig(source=str(source), use_cache=False, **kw), tok)
    return train + eval_


def test_every_local_file_type_gives_the_same_examples(tok, tmp_path):
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    expected = load(tok, tmp_path / "p.jsonl")
    assert [e.chosen for e in expected] == [" 4", " Paris.", " Paris"]
    (tmp_path / "p.json").write_text(json.dumps(ROWS))
    (tmp_path / "wrapped.json").write_text(json.dumps({"data": ROWS}))
    pd.DataFrame(ROWS).to_parquet(tmp_path / "p.parquet")
    pd.DataFrame(ROWS).to_csv(tmp_path / "p.csv", index=False)
    for name in ("p.json", "wrapped.json", "p.parquet", "p.csv"):
        assert load(tok, tmp_path / name) == expected, name


def test_datasets_folders_take_the_hub_code_path(tok, tmp_path):
    import datasets

    expected = load(tok, _jsonl(tmp_path / "ref.jsonl"))
    # a `save_to_disk` folder, plain and as a DatasetDict with a validation split
    datasets.Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "saved"))
    assert load(tok, tmp_path / "saved") == expected
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[:2]),
                               "validation": datasets.Dataset.from_list(ROWS[2:])})
    dd.save_to_disk(str(tmp_path / "saved_dict"))
    train, eval_ = load_preferences(DataConfig(source=str(tmp_path / "saved_dict"), eval_split="validation",
                                               use_cache=False), tok)
    assert train == expected[:2] and eval_ == expected[2:]
    # a folder of data files: `datasets.load_dataset(path)`, as for a hub name
    (tmp_path / "repo").mkdir()
    _jsonl(tmp_path / "repo" / "train.jsonl")
    got = load(tok, tmp_path / "repo", hf_cache_dir=str(tmp_path / "hf_cache"))
    assert got == expected
    with pytest.raises(DataError, match=r"saved_dict: no split 'test'; it has \['train', 'validation'\]"):
        load(tok, tmp_path / "saved_dict", split="test")


def _jsonl(path: Path) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def test_datasets_rows_named_in_errors(tok, tmp_path):
    import datasets

    datasets.Dataset.from_list(ROWS + [{"prompt": "x", "chosen": " a", "rejected": None}]).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(DataError, match=r"d\[train\]: row 4: field 'rejected' must be a string, got NoneType"):
        load(tok, tmp_path / "d", format="standard")


def test_load_tokenizer_from_tokenizer_json():
    tok = load_tokenizer(str(PYTHIA))
    assert (tok.eos_token, tok.eos_token_id, tok.pad_token, tok.pad_token_id) == ("<|endoftext|>", 0, "<|padding|>", 1)
    assert tok("Hello world", add_special_tokens=False)["input_ids"] == [12092, 1533]  # shared README
    gpt2 = load_tokenizer(str(SHARED / "tokenizers" / "gpt2" / "tokenizer.json"))
    assert gpt2.eos_token_id == 50256 and gpt2.pad_token_id == 50256  # GPT-2 has no pad: pad = eos


def test_load_tokenizer_from_a_folder(tmp_path):
    tok = load_tokenizer(str(PYTHIA))
    tok.save_pretrained(str(tmp_path / "saved"))  # tokenizer.json + tokenizer_config.json: AutoTokenizer
    again = load_tokenizer(str(tmp_path / "saved"))
    assert (again.eos_token_id, again.pad_token_id) == (0, 1)
    assert again("Hello world", add_special_tokens=False)["input_ids"] == [12092, 1533]
    (tmp_path / "bare").mkdir()  # a folder holding only tokenizer.json
    (tmp_path / "bare" / "tokenizer.json").write_bytes(PYTHIA.read_bytes())
    assert load_tokenizer(str(tmp_path / "bare")).pad_token_id == 1
    with pytest.raises(DataError, match="cannot load a tokenizer from"):
        load_tokenizer(str(tmp_path / "empty_dir_that_is_missing" / "x.json"))


def test_hub_name_goes_to_load_dataset_with_subset_split_and_cache(tok, tmp_path, monkeypatch):
    """No network here: `datasets.load_dataset` is replaced to record the call a hub name makes
    and to return the rows it would; a failure is reported as a DataError naming the source."""
    import datasets

    calls = []

    def fake_load_dataset(name, subset=None, *, split, cache_dir):
        calls.append((name, subset, split, cache_dir))
        if name == "nobody/missing":
            raise ConnectionError("offline")
        return datasets.Dataset.from_list(ROWS[:2] if split == "train" else ROWS[2:])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    expected = load(tok, _jsonl(tmp_path / "ref.jsonl"))
    train, eval_ = load_preferences(DataConfig(source="org/prefs", subset="default", eval_split="test",
                                               hf_cache_dir=str(tmp_path / "hf"), use_cache=False), tok)
    assert train == expected[:2] and eval_ == expected[2:]
    assert ("org/prefs", "default", "train", str(tmp_path / "hf")) in calls
    assert ("org/prefs", "default", "test", str(tmp_path / "hf")) in calls
    with pytest.raises(DataError, match=r"nobody/missing: not a file; loading it as a Hugging Face dataset name .*ConnectionError: offline"):
        load(tok, "nobody/missing")
