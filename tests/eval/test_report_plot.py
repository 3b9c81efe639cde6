"""Tables over seeds and the plots, from synthetic run folders."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from hybridpo.cli import main
from hybridpo.report import aggregate, markdown_table, plot_validation_kl, read_metrics, split_label, validation_series


def write_run(root: Path, name: str, kl_slope: float, seed: int) -> Path:
    d = root / name
    d.mkdir(parents=True)
    rows = []
    for step in range(1, 41):
        rows.append({"step": step, "loss": 0.69 * math.exp(-step / 20) + 0.01 * seed, "rewards/margins": 0.05 * step,
                     "kl": kl_slope * step / 10, "reward": 0.02 * step})
        if step % 10 == 0:  # a validation row every 10 steps, as the loop writes them
            rows.append({"step": step, "eval/kl": kl_slope * step / 10 + 0.1 * seed, "eval/loss": 0.5})
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def test_split_label():
    assert split_label("dpo-seed2") == ("dpo", 2)
    assert split_label("hypo_s0") == ("hypo", 0)
    assert split_label("sft") == ("sft", None)


def test_aggregate_mean_and_std_over_seeds():
    results = {"dpo-seed0": {"kl": 1.0, "win_rate": 0.4}, "dpo-seed1": {"kl": 3.0, "win_rate": 0.6},
               "hypo-seed0": {"kl": 0.5}}
    rows = {r["label"]: r for r in aggregate(results)}
    assert rows["dpo"]["n"] == 2
    assert rows["dpo"]["kl"] == (2.0, pytest.approx(math.sqrt(2.0)))  # mean 2, sample std sqrt(((1)^2+(1)^2)/1)
    assert rows["hypo"]["kl"] == (0.5, None)  # one seed: no std is claimed
    table = markdown_table(list(rows.values()))
    assert "| dpo | 2 | 0.500 ± 0.141 | 2.000 ± 1.414 |" in table
    assert "| hypo | 1 |  | 0.500 |" in table


def test_validation_series_and_bad_rows(tmp_path):
    d = write_run(tmp_path, "dpo-seed1", 1.0, 1)
    assert validation_series(d, "eval/kl") == [(10.0, 1.1), (20.0, 2.1), (30.0, 3.1), (40.0, 4.1)]
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "metrics.jsonl").write_text('{"step": 1}\nnot json\n')
    with pytest.raises(ValueError, match=r"bad/metrics.jsonl:2: not JSON"):
        read_metrics(tmp_path / "bad")
    with pytest.raises(ValueError, match="logged 'eval/nothing'"):
        plot_validation_kl([d], tmp_path / "x.png", key="eval/nothing")


def test_plot_command_writes_pngs(tmp_path):
    runs = [write_run(tmp_path, f"{m}-seed{s}", slope, s) for m, slope in (("dpo", 2.0), ("hypo", 0.5)) for s in range(3)]
    out = tmp_path / "plots"
    assert main(["plot", *map(str, runs), "--out", str(out)]) == 0
    for name in ("training_curves.png", "validation_kl.png"):
        png = (out / name).read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
