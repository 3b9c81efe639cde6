"""`hybridpo data inspect` through the real CLI dispatcher."""

import json
from pathlib import Path

from hybridpo.cli import main

SHARED = Path(__file__).resolve().parents[3] / "shared"


def test_inspect_prints_counts(tmp_path, capsys):
    rows = [{"prompt": "one two three four five", "chosen": " six", "rejected": " seven"},
            {"prompt": "p", "chosen": " same", "rejected": " same"}]
    src = tmp_path / "pairs.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code = main(["data", "inspect", "--source", str(src), "--no-cache", "--show", "1", "max_prompt_length=2"])
    out = capsys.readouterr().out
    assert code == 0
    assert "rows read  2" in out
    assert "kept       train 1 (1 groups), eval 0 (0 groups)" in out
    assert "dropped    ties 1, empty 0" in out
    assert "truncated  prompts 1 (start cut), responses 0" in out
    assert "prompt (2 tokens)" in out


def test_inspect_reads_the_data_section_of_a_yaml(tmp_path, capsys):
    src = tmp_path / "prompts.jsonl"
    src.write_text(json.dumps({"prompt": "hi", "completion": " there"}) + "\n")
    config = tmp_path / "run.yaml"
    config.write_text(f"method: sft\ndata:\n  source: {src}\n  use_cache: false\n")
    assert main(["data", "inspect", "--config", str(config), "--kind", "prompts"]) == 0
    assert "kept       train 1" in capsys.readouterr().out


def test_inspect_reports_data_errors_without_a_traceback(tmp_path, capsys):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"prompt": "p", "chosen": " a"}\n')
    assert main(["data", "inspect", "--source", str(src), "--no-cache"]) == 2
    assert "bad.jsonl: line 1: missing field 'rejected': the row has 'chosen'" in capsys.readouterr().out


def write_non_utf8(path):
    path.write_bytes(json.dumps({"prompt": "p", "chosen": " a", "rejected": " b"}).encode() + b"\n"
                     + b'{"prompt": "caf\xe9", "chosen": " a", "rejected": " b"}\n')
    return path


def test_non_utf8_data_is_one_error_line_in_data_and_train(tmp_path, capsys):
    src = write_non_utf8(tmp_path / "latin1.jsonl")
    message = f"error: {src}: line 2: not UTF-8 text (byte 0xe9 at column 16); save the file as UTF-8"
    assert main(["data", "inspect", "--source", str(src), "--no-cache"]) == 2
    assert capsys.readouterr().out.strip() == message
    config = tmp_path / "run.yaml"  # the data load fails before any model is loaded
    tokenizer = SHARED / "tokenizers" / "pythia" / "tokenizer.json"
    config.write_text(f"method: dpo\nmodel: {{name_or_path: unused, tokenizer: {tokenizer}}}\n"
                      f"data: {{source: {src}, use_cache: false}}\nrun: {{out_dir: {tmp_path / 'run'}, progress: false}}\n")
    assert main(["train", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert message in err.splitlines() and "Traceback" not in err
