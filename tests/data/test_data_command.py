"""`hybridpo data inspect` through the real CLI dispatcher."""

import json

from hybridpo.cli import main


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
