"""isomorphic-equivalence at its real settings (20 instances per case, exact L-BFGS)."""

import math

import pytest

from hybridpo.lab import isomorphic_equivalence as iso


@pytest.fixture(scope="module")
def result():
    return iso.run(seed=0)


def test_every_claim_holds(result):
    assert [c.name for c in result.claims if not c.holds] == []


def test_full_coverage_policies_coincide(result):
    """Full support: r ↦ π_ref e^{r/β}/Z is a bijection up to constants, so both exact
    minimisers are π* itself; L-BFGS to a 1e-12 gradient gives agreement far below 1e-6."""
    assert len(result.series["full_max_diff"]) == 20
    assert max(result.series["full_max_diff"]) < 1e-6


def test_partial_coverage_differences(result):
    """μ partial: moving δ = 0.5 of π_rlhf's mass onto an uncovered response changes no log-ratio
    difference on the data, so the DPO loss is unchanged (round-off only); J_r̂ is strictly concave
    with its maximum at π_rlhf, so it must rank the moved policy strictly lower.
    π_ref = 0 off the data: RLHF has no mass there, DPO (uniform start) does: KL = ∞."""
    s = result.series
    assert max(s["solution_set_loss_gap"]) < 1e-12
    assert len(s["solution_set_J_gap"]) == 20 and max(s["solution_set_J_gap"]) < 0
    assert max(s["partial_ref_rlhf_outside_mass"]) == 0.0
    assert min(s["partial_ref_dpo_outside_mass"]) > 0.0
    assert all(k == math.inf for k in s["partial_ref_dpo_kl"])
    assert all(math.isfinite(k) for k in s["partial_ref_rlhf_kl"])
