"""coverage-bounds at its real settings (200 instances)."""

import math

import pytest
import torch

from hybridpo.lab import coverage_bounds as cb


@pytest.fixture(scope="module")
def result():
    return cb.run(seed=0)


def test_every_claim_holds(result):
    assert [c.name for c in result.claims if not c.holds] == []


def test_no_instance_violates_either_bound(result):
    """regret ≤ C √ε with constant 1 (derivation in the module docstring), on all 200 instances."""
    s = result.series
    assert len(s["regret_dpo"]) == 200
    for method in ("dpo", "rlhf"):
        assert all(-1e-12 <= reg <= b + 1e-12 for reg, b in zip(s[f"regret_{method}"], s[f"bound_{method}"]))
        assert all(reg <= b + 1e-12 for reg, b in zip(s[f"regret_{method}"], s[f"cs_bound_{method}"]))
    assert all(k <= g + 1e-9 for k, g in zip(s["c_eps_kl"], s["c_glo"]))


def test_kl_ball_max_prob_by_hand():
    """π_ref(y) = ½, radius log 2: kl(p‖½) = log 2 at p = 1, so p_max = 1. Radius 0: p_max = π_ref."""
    ref = torch.tensor([[0.5, 0.25, 0.25]], dtype=torch.float64)
    p = cb.kl_ball_max_prob(ref, torch.tensor([math.log(2)], dtype=torch.float64))
    assert p[0, 0] == pytest.approx(1.0, abs=1e-9)
    # y with π_ref = ¼ at radius log 2: kl(p‖¼) = log 2 solves below 1
    q = 0.25
    pm = float(p[0, 1])
    kl = pm * math.log(pm / q) + (1 - pm) * math.log((1 - pm) / (1 - q))
    assert kl == pytest.approx(math.log(2), abs=1e-9) and q < pm < 1
    p0 = cb.kl_ball_max_prob(ref, torch.tensor([0.0], dtype=torch.float64))
    assert torch.allclose(p0, ref, atol=1e-12)
