"""Error messages name the file, the row (JSONL: line) and the field; ties and empty responses
are dropped and counted, or rejected when configured; the real UltraFeedback files' bad rows."""

import json
from pathlib import Path

import pytest

from hybridpo.data import DataConfig, DataError, load_preferences, prepare_preferences, ultrafeedback

SHARED = Path(__file__).resolve().parents[3] / "shared"
UF = SHARED / "data" / "ultrafeedback"
GOOD = {"prompt": "p", "chosen": " a", "rejected": " b"}


def load(tok, path, **kw):
    return prepare_preferences(DataConfig(source=str(path), use_cache=False, **kw), tok)


def test_bad_json_line_names_file_and_line(tok, tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n" + '{"prompt": "p", "chosen": oops}\n')  # line 2 blank, line 3 bad
    with pytest.raises(DataError, match=r"pairs\.jsonl: line 3: invalid JSON \(Expecting value at column 27\)"):  # `oops` starts at column 27
        load(tok, path)


def test_non_object_json_line(tok, tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(GOOD) + "\n[1, 2]\n")
    with pytest.raises(DataError, match=r"pairs\.jsonl: line 2: expected a JSON object.*got list"):
        load(tok, path)


def test_missing_field_names_row_and_field(tok, tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps({"prompt": "p", "chosen": " a", "rejected_": " b"}) + "\n")
    with pytest.raises(DataError, match=r"pairs\.jsonl: line 2: missing field 'rejected' \(the row has \['chosen', 'prompt', 'rejected_'\]\)"):
        load(tok, path)


def test_non_string_field_names_row_field_and_type(tok, tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps({"prompt": "p", "chosen": 3, "rejected": " b"}) + "\n")
    with pytest.raises(DataError, match=r"pairs\.jsonl: line 2: field 'chosen' must be a string, got int"):
        load(tok, path)


def test_bad_message_in_a_conversation_names_its_index(tok, tmp_path):
    path = tmp_path / "c.jsonl"
    row = {"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant"}],
           "rejected": [{"role": "assistant", "content": "b"}]}
    path.write_text(json.dumps(row) + "\n")
    with pytest.raises(DataError, match=r"c\.jsonl: line 1: field 'chosen', message 0: expected"):
        load(tok, path, chat_template="builtin")


def test_json_and_csv_errors_name_the_row(tok, tmp_path):
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps([GOOD, GOOD, {"prompt": "p", "chosen": None, "rejected": " b"}]))
    with pytest.raises(DataError, match=r"pairs\.json: row 3: field 'chosen' must be a string, got NoneType"):
        load(tok, path, format="standard")
    path = tmp_path / "broken.json"
    path.write_text('[{"prompt": "p",\n "chosen": }]')
    with pytest.raises(DataError, match=r"broken\.json: line 2: invalid JSON"):
        load(tok, path)
    path = tmp_path / "pairs.csv"
    path.write_text("prompt,chosen,rejected\np, a, b\np, a, b,extra\n")
    with pytest.raises(DataError, match=r"pairs\.csv: row 2 \(line 3\): more cells than the header"):
        load(tok, path)


def test_unsupported_file_and_bad_settings(tok, tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("hello")
    with pytest.raises(DataError, match=r"pairs\.txt: unsupported file type '\.txt'"):
        load(tok, path)
    with pytest.raises(DataError, match=r"data\.format='jsonl'; choose from"):
        DataConfig(source="x", format="jsonl")
    with pytest.raises(DataError, match="max_length=10 needs max_prompt_length < max_length"):
        DataConfig(source="x", max_length=10)
    with pytest.raises(DataError, match="eval_fraction .* cannot be combined with data.eval_source"):
        DataConfig(source="x", eval_source="y", eval_fraction=0.1)
    with pytest.raises(DataError, match=r"unknown data settings \['max_len'\]"):
        DataConfig.from_dict({"source": "x", "max_len": 3})


def test_ties_and_empty_responses_dropped_and_counted(tok, tmp_path):
    rows = [GOOD, {"prompt": "p", "chosen": " same", "rejected": " same"},  # tie
            {"prompt": "p", "chosen": "  ", "rejected": " b"},  # empty chosen
            {"prompt": "", "chosen": " a", "rejected": " b"}, GOOD]  # empty prompt
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    p = load(tok, path)
    assert (p.stats.rows_read, p.stats.dropped_ties, p.stats.dropped_empty, len(p.train)) == (5, 1, 2, 2)
    with pytest.raises(DataError, match=r"pairs\.jsonl: line 2: fields 'chosen' and 'rejected' are equal"):
        load(tok, path, on_tie="error")
    with pytest.raises(DataError, match=r"pairs\.jsonl: line 3: field 'chosen' is empty"):
        load(tok, path, on_empty="error")


def test_ultrafeedback_ties_and_empty_rows_are_dropped_and_counted(tok):
    """Counts derived from the files themselves: train has 4 ties + 2 empty responses, eval 1 tie
    (the shared README's "5 ties" counts both files)."""
    def bad(path):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        ties = [i for i, r in enumerate(rows, 1) if r["chosen"] == r["rejected"]]
        empty = [i for i, r in enumerate(rows, 1) if not r["chosen"].strip() or not r["rejected"].strip()]
        return len(rows), ties, empty

    n_train, ties_train, empty_train = bad(UF / "train_1000.jsonl")
    n_eval, ties_eval, empty_eval = bad(UF / "eval_200.jsonl")
    assert (len(ties_train), len(empty_train), len(ties_eval), len(empty_eval)) == (4, 2, 1, 0)
    p = prepare_preferences(ultrafeedback(chat_template="builtin", use_cache=False), tok)
    s = p.stats
    assert s.rows_read == n_train + n_eval == 1200
    assert (s.dropped_ties, s.dropped_empty) == (5, 2)
    assert (len(p.train), len(p.eval)) == (1000 - 6, 200 - 1)
    assert all(e.chosen != e.rejected and e.chosen.strip() and e.rejected.strip() for e in p.train + p.eval)
    with pytest.raises(DataError, match=rf"train_1000\.jsonl: line {ties_train[0]}: fields 'chosen' and 'rejected' are equal"):
        load_preferences(ultrafeedback(chat_template="builtin", use_cache=False, on_tie="error"), tok)


def test_bytes_that_are_not_utf8_name_the_file_line_and_column(tok, tmp_path):
    """A Latin-1 "é" (byte 0xe9) in a UTF-8 file: a DataError at its 1-based line and column
    (columns count characters, so the two-byte "ü" before it is one column), never a
    UnicodeDecodeError; JSONL, JSON and CSV alike, lines ending in \\n or \\r\\n."""
    good = json.dumps(GOOD).encode()
    bad = '{"prompt": "ü caf'.encode() + b'\xe9", "chosen": " a", "rejected": " b"}'
    column = len('{"prompt": "ü caf') + 1  # 18: the "é" is the 18th character of its line
    for newline in (b"\n", b"\r\n"):
        path = tmp_path / "pairs.jsonl"
        path.write_bytes(newline.join([good, b"", bad, good]) + newline)  # line 2 blank, line 3 bad
        with pytest.raises(DataError, match=rf"pairs\.jsonl: line 3: not UTF-8 text \(byte 0xe9 at column {column}\)"):
            load(tok, path)
    path = tmp_path / "pairs.json"
    path.write_bytes(b"[\n" + good + b",\n" + bad + b"\n]")
    with pytest.raises(DataError, match=rf"pairs\.json: line 3: not UTF-8 text \(byte 0xe9 at column {column}\)"):
        load(tok, path)
    path = tmp_path / "pairs.csv"
    path.write_bytes(b"prompt,chosen,rejected\r\np, a, b\r\ncaf\xe9, a, b\r\n")
    with pytest.raises(DataError, match=r"pairs\.csv: line 3: not UTF-8 text \(byte 0xe9 at column 4\)"):
        load(tok, path)


def test_a_utf8_byte_order_mark_is_skipped(tok, tmp_path):
    """Spreadsheet programs start UTF-8 CSV files with a BOM; the first header stays "prompt"."""
    path = tmp_path / "pairs.csv"
    path.write_bytes(b"\xef\xbb\xbfprompt,chosen,rejected\np, a, b\n")
    (ex,) = load(tok, path).train
    assert (ex.prompt, ex.chosen) == ("p", " a")
