"""`hybridpo bench speed` end to end on the tiny workload, hybridpo only, 2 steps (no timing asserted)."""

import json
import math

import pytest

from hybridpo import cli
from hybridpo.bench.report import COLUMNS
from hybridpo.bench.speed import Summary


def test_bench_speed_tiny_smoke(tmp_path, capsys):
    out = tmp_path / "bench"
    code = cli.main(["bench", "speed", "--workload", "tiny", "--variants", "hybridpo dpo", "--steps", "2",
                     "--repeats", "1", "--threads", "1", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    text = (out / "speed.md").read_text()
    for header, _, _ in COLUMNS:
        assert f" {header} |" in text
    payload = json.loads((out / "speed.json").read_text())
    assert payload["peak_flops"] > 0 and payload["threads"] == 1
    (row,) = payload["rows"]
    assert row["status"] == "ok", row["status"]
    assert set(row) == {f.name for f in Summary.__dataclass_fields__.values()}
    assert math.isfinite(row["loss_1"])
    # policy and reference are the same weights at step 1, so every log-ratio is 0: loss = log 2
    assert row["loss_1"] == pytest.approx(math.log(2), abs=1e-6)
    assert math.isfinite(row["loss_2"]) and row["loss_2"] != row["loss_1"]  # the update changed the policy
    assert row["peak_rss_gb"] > 0 and row["step_s"] > 0 and 0 < row["flops_frac"]
    assert set(row["phase_share"]) == {"policy forward", "reference forward", "backward", "clip + optimizer"}
    assert 0 < sum(row["phase_share"].values()) <= 1.0 + 1e-9
    (record,) = row["records"]
    assert len(record["step_s"]) == 2 and len(record["losses"]) == 2
    assert record["tokens"][0] > 0 and record["flops"][0] > 0
    assert record["peak_flops"] > 0 and row["run_peak"] == record["peak_flops"]  # measured in the run's process
    assert "hybridpo dpo" in printed
    # the same runs re-read from speed.json: the same table, written to another folder
    again = tmp_path / "again"
    assert cli.main(["bench", "speed", "--report-from", str(out), "--out", str(again)]) == 0
    assert (again / "speed.md").read_text() == text


def test_report_from_a_file_that_is_not_a_speed_json_says_which(tmp_path):
    bad = tmp_path / "speed.json"
    bad.write_text('{"rows": []}')
    with pytest.raises(SystemExit, match=r"speed\.json: not a speed\.json that `bench speed --out` wrote"):
        cli.main(["bench", "speed", "--report-from", str(bad)])


def test_unknown_variant_is_rejected():
    with pytest.raises(SystemExit, match="unknown variant"):
        cli.main(["bench", "speed", "--variants", "fastest"])
