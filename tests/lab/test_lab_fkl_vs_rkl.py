"""fkl-vs-rkl: the forward fit matches moments, the reverse fit picks a mode."""

import math

import pytest

from hybridpo.lab import fkl_vs_rkl as fr


@pytest.fixture(scope="module")
def result():
    return fr.run(seed=0)


def test_every_claim_holds(result):
    assert [c.name for c in result.claims if not c.holds] == []


def test_fits_by_hand(result):
    """Mixture ½N(-3, 0.7²) + ½N(3, 0.7²): mean 0, variance 0.49 + 9 = 9.49, so the forward
    fit is N(0, 3.0806²). The reverse fit started at m = 1 settles on the mode +3 with σ ≈ 0.7, and
    its KL is ≈ log 2 (q ignores half of p: KL(q‖p) ≈ -log ½)."""
    f, r = result.series["forward"], result.series["reverse"]
    assert f["mean"] == pytest.approx(0.0, abs=1e-3)
    assert f["std"] == pytest.approx(math.sqrt(9.49), abs=1e-3)
    assert r["mean"] == pytest.approx(3.0, abs=0.01)
    assert r["std"] == pytest.approx(0.7, abs=0.01)
    assert r["kl"] == pytest.approx(math.log(2), abs=1e-3)
