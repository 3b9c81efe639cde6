"""The `hybridpo lab` command, the registry and the result records."""

import json
import math

import pytest

from hybridpo.cli import main
from hybridpo.lab.registry import EXPERIMENTS, experiment
from hybridpo.lab.result import Claim, LabResult


def test_claim_holds_is_computed_from_value_and_threshold():
    assert Claim("a", "s", 1.0, "<", 2.0).holds
    assert not Claim("a", "s", 2.0, "<", 2.0).holds
    assert Claim("a", "s", 2.0, "<=", 2.0).holds
    assert Claim("a", "s", math.inf, "==", math.inf).holds
    with pytest.raises(ValueError, match="choose from"):
        Claim("a", "s", 1.0, "~", 1.0)


def test_result_json_writes_infinities_as_strings():
    r = LabResult("x", "§0", 0, {"k": 1}, {"kl": [0.5, math.inf, -math.inf]},
                  [Claim("kl_inf", "KL is infinite", math.inf, "==", math.inf)])
    data = json.loads(r.to_json())  # strict JSON: no bare Infinity
    assert data["series"]["kl"] == [0.5, "inf", "-inf"]
    assert data["claims"][0]["holds"] is True and data["claims"][0]["value"] == "inf"


def test_every_registered_experiment_has_the_module_interface():
    assert len(EXPERIMENTS) == 8
    for name in EXPERIMENTS:
        module = experiment(name)
        assert module.NAME == name
        assert callable(module.run) and callable(module.plot) and module.SECTION
    with pytest.raises(ValueError, match="choose from"):
        experiment("no-such-lab")


def test_lab_list_prints_every_experiment(capsys):
    assert main(["lab", "list"]) == 0
    out = capsys.readouterr().out
    for name in EXPERIMENTS:
        assert name in out


def test_lab_run_writes_result_and_figure_deterministically(tmp_path, capsys):
    for out in (tmp_path / "a", tmp_path / "b"):
        assert main(["lab", "run", "example-6-1", "--out", str(out), "--seed", "3"]) == 0
    line = capsys.readouterr().out
    assert "example-6-1" in line and "claims hold" in line
    a = (tmp_path / "a" / "example-6-1" / "result.json").read_text()
    assert a == (tmp_path / "b" / "example-6-1" / "result.json").read_text()
    data = json.loads(a)
    assert data["seed"] == 3 and data["settings"] and data["series"]
    assert all({"name", "value", "threshold", "holds"} <= set(c) for c in data["claims"])
    png = (tmp_path / "a" / "example-6-1" / "figure.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_seeded_experiment_is_deterministic_and_seed_sensitive():
    """Two runs with one seed agree exactly; another seed draws another instance."""
    module = experiment("hypo-vs-dpo")
    cfg = module.Config(steps=50)
    a, b, c = module.run(0, cfg), module.run(0, cfg), module.run(1, cfg)
    assert a.to_json() == b.to_json()
    assert a.series["dpo"]["kl"] != c.series["dpo"]["kl"]
