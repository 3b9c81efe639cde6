"""Every training run writes RUN/data_stats.json: the data load's counts and each split's token lengths.

A one-step DPO run on a hand-written pair file with a known tie and a known empty row, and an
evaluation file with one more tie; every expected number is derived from those rows and the
tokenizer (not read back from the data layer).
"""

from __future__ import annotations

import json
from pathlib import Path

from hybridpo.cli import main

TRAIN_ROWS = [{"prompt": f"Question {i}: what is {i} plus {i}?", "chosen": f" It is {2 * i}.", "rejected": " No idea"}
              for i in range(6)] + [
    {"prompt": "A tie", "chosen": " same", "rejected": " same"},  # dropped: chosen == rejected
    {"prompt": "An empty one", "chosen": "   ", "rejected": " b"},  # dropped: whitespace-only response
]
EVAL_ROWS = [{"prompt": f"Held out {i}: name a colour.", "chosen": " Blue is a colour.", "rejected": " Seven"}
             for i in range(3)] + [{"prompt": "Another tie", "chosen": " x", "rejected": " x"}]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def is_tie(r: dict) -> bool:
    return r["chosen"] == r["rejected"]


def is_empty(r: dict) -> bool:
    return not all(r[k].strip() for k in ("prompt", "chosen", "rejected"))


def lengths(tok, rows: list[dict], field: str, eos: int) -> dict:
    """min / mean / max token length of `field` over the kept rows; responses gain one EOS token."""
    ns = [len(tok(r[field], add_special_tokens=False)["input_ids"]) + eos for r in rows]
    return {"min": min(ns), "mean": sum(ns) / len(ns), "max": max(ns)}


def test_a_run_writes_its_data_stats(tiny_model_dir, tok, tmp_path, capsys):
    train_file = write_jsonl(tmp_path / "train.jsonl", TRAIN_ROWS)
    eval_file = write_jsonl(tmp_path / "eval.jsonl", EVAL_ROWS)
    config = tmp_path / "dpo.yaml"
    config.write_text(f"""
method: dpo
method_args: {{beta: 0.1}}
model: {{name_or_path: {tiny_model_dir}, reference: copy}}
data: {{source: {train_file}, eval_source: {eval_file}, use_cache: false}}
optim: {{lr: 1.0e-4, batch_size: 2, max_steps: 1}}
run: {{out_dir: {tmp_path / 'run'}, progress: false, eval_every: 0}}
""")
    assert main(["train", "--config", str(config)]) == 0

    stats = json.loads((tmp_path / "run" / "data_stats.json").read_text())
    rows = TRAIN_ROWS + EVAL_ROWS
    kept_train = [r for r in TRAIN_ROWS if not (is_tie(r) or is_empty(r))]
    kept_eval = [r for r in EVAL_ROWS if not (is_tie(r) or is_empty(r))]
    counts = stats["counts"]
    # 8 + 4 rows read; ties: 1 in train + 1 in eval; empty: 1 in train
    assert counts["rows_read"] == len(rows) == 12
    assert counts["dropped_ties"] == sum(map(is_tie, rows)) == 2
    assert counts["dropped_empty"] == sum(map(is_empty, rows)) == 1
    assert counts["truncated_prompts"] == counts["truncated_responses"] == 0  # no length limits set
    assert (counts["train_examples"], counts["eval_examples"]) == (len(kept_train), len(kept_eval)) == (6, 3)
    assert stats["source"] == str(train_file) and stats["eval_source"] == str(eval_file)
    for split, kept in (("train", kept_train), ("eval", kept_eval)):
        s = stats[split]
        assert s["examples"] == len(kept) and s["groups"] == len({r["prompt"] for r in kept})  # group = the prompt
        assert s["prompt_tokens"] == lengths(tok, kept, "prompt", eos=0)
        assert s["chosen_tokens"] == lengths(tok, kept, "chosen", eos=1)
        assert s["rejected_tokens"] == lengths(tok, kept, "rejected", eos=1)
        assert "reference_tokens" not in s  # pairs have no reference
    summary = [line for line in capsys.readouterr().err.splitlines() if line.startswith("data: ")]
    assert len(summary) == 1 and summary[0].startswith("data: 12 rows read; kept 6 train / 3 eval")
    assert not list((tmp_path / "run").glob(".data_stats.json.tmp-*"))  # the temp file was renamed into place


def test_a_run_without_eval_data_has_no_eval_entry(tiny_model_dir, tmp_path):
    train_file = write_jsonl(tmp_path / "train.jsonl", TRAIN_ROWS[:4])
    config = tmp_path / "dpo.yaml"
    config.write_text(f"""
method: dpo
model: {{name_or_path: {tiny_model_dir}, reference: copy}}
data: {{source: {train_file}, use_cache: false}}
optim: {{lr: 1.0e-4, batch_size: 2, max_steps: 1}}
run: {{out_dir: {tmp_path / 'run'}, progress: false, eval_every: 0}}
""")
    assert main(["train", "--config", str(config)]) == 0
    stats = json.loads((tmp_path / "run" / "data_stats.json").read_text())
    assert "eval" not in stats and stats["train"]["examples"] == 4 and stats["counts"]["dropped_ties"] == 0
