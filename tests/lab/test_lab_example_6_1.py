"""example-6-1, exact: hand-derived policies for both reward vectors."""

import math

import pytest

from hybridpo.lab import example_6_1 as ex


@pytest.fixture(scope="module")
def result():
    return ex.run(seed=0)


def _softmax(logits):
    z = [math.exp(v - max(logits)) for v in logits]
    return [v / sum(z) for v in z]


def test_every_claim_holds(result):
    assert [c.name for c in result.claims if not c.holds] == []


def test_as_written_by_hand(result):
    """w* = [10, 1]: r* = (10, 1, 2), r*1 - r*2 = 9; β = 1, φ1 - φ2 = (1, -1), ‖·‖² = 2, so
    θ = 9/2·(1, -1) and the logits ⟨θ, φ⟩ are (4.5, -4.5, -9): y1 up, y2 and the unseen y3 down."""
    assert result.series["as_written"]["r_star"] == [10.0, 1.0, 2.0]
    assert result.series["as_written"]["dpo"] == pytest.approx(_softmax([4.5, -4.5, -9.0]), abs=1e-9)


def test_swapped_by_hand(result):
    """w* = [1, 10]: r* = (1, 10, 20), r*1 - r*2 = -9, θ = -9/2·(1, -1), logits (-4.5, 4.5, 9):
    the unseen optimum y3 takes 1/(1 + e^-4.5 + e^-13.5) ≈ 0.989 of the mass."""
    dpo = result.series["swapped"]["dpo"]
    assert dpo == pytest.approx(_softmax([-4.5, 4.5, 9.0]), abs=1e-9)
    assert dpo[2] == pytest.approx(0.98901, abs=1e-5)
    assert dpo[2] > 1 / 3 > dpo[1] > dpo[0]


def test_shift_and_rlhf(result):
    """r* + c gives identical labels, so identical policies; RLHF's Gibbs policy of the fitted
    linear r̂ is the same log-linear policy as DPO's (isomorphic classes)."""
    assert result.series["as_written_shifted"]["dpo"] == pytest.approx(result.series["as_written"]["dpo"], abs=1e-12)
    for case in ("as_written", "swapped"):
        assert result.series[case]["rlhf"] == pytest.approx(result.series[case]["dpo"], abs=1e-6)
