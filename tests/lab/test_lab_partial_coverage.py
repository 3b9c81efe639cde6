"""partial-coverage at its real settings (exact, ~3 s)."""

import math

import pytest
import torch

from hybridpo import losses
from hybridpo.lab import partial_coverage as pc
from hybridpo.lab.bandit import gibbs_logprobs


@pytest.fixture(scope="module")
def result():
    return pc.run(seed=0)


def test_every_claim_holds(result):
    assert [c.name for c in result.claims if not c.holds] == []


def test_dpo_and_ipo_constructions_reach_the_exact_minimum(result):
    """DPO's population loss on (y1, y2) is minimised at β h = r*1 - r*2 with value the label
    entropy H(p), p = σ(r*1 - r*2); IPO's at h = (2p - 1)/(2β) with value p(1 - p)/β². Mass δ on y3
    scales π(y1) and π(y2) by the same 1 - δ, so h and the loss do not move: gap < 1e-12."""
    for name in ("dpo", "ipo"):
        rows = result.series[name]
        assert max(abs(g) for g in rows["loss_gap"]) < 1e-12
        # δ = 0 is the only construction inside supp(π_ref): finite KL there, ∞ elsewhere
        for delta, kl, j in zip(rows["delta"], rows["kl"], rows["J"]):
            assert (kl == math.inf) == (delta > 0)
            assert (j == -math.inf) == (delta > 0)
        assert rows["pi_y3"] == pytest.approx(list(rows["delta"]), abs=1e-15)


def test_ipo_minimum_value_by_hand():
    """r* = (1, 0, ·), β = 0.5: p = σ(1); IPO minimum p(1-p)/β² = 4 σ(1) σ(-1) ≈ 0.7864."""
    p = 1 / (1 + math.exp(-1))
    assert p * (1 - p) / 0.25 == pytest.approx(0.78644773, abs=1e-8)


def test_rlhf_lecture_reward_model(result):
    """r̂ = [1, 0, 10], β = 0.5, π_ref = (½, ½, 0): π ∝ (e², 1, 0) so π(y3) = 0 exactly and
    π(y1) = e²/(1 + e²) ≈ 0.8808; KL = log 2 - H(π) ≈ 0.3278 ≤ 2R'/β = 40."""
    probs = result.series["rlhf_probs"]
    assert probs[2] == 0.0
    assert probs[0] == pytest.approx(math.exp(2) / (1 + math.exp(2)), abs=1e-12)
    p = probs[0]
    kl = math.log(2) + p * math.log(p) + (1 - p) * math.log(1 - p)
    assert result.series["rlhf_kl"] == pytest.approx(kl, abs=1e-12)
    assert result.claim("rlhf_lecture_kl_bound").value == pytest.approx(kl / 40, abs=1e-12)


def test_lemma_4_1_grid_covers_every_cell_and_holds(result):
    """7 β × 4 R' × 20 draws = 560 reward models; each KL ≤ span(r̂)/β ≤ 2R'/β and no mass outside."""
    g = result.series["lemma_grid"]
    assert len(g["kl"]) == 7 * 4 * 20
    assert all(0 <= k <= s + 1e-12 <= b + 1e-12 for k, s, b in zip(g["kl"], g["span_bound"], g["bound"]))
    assert max(g["mass_outside"]) == 0.0


def test_gibbs_policy_is_stationary_for_the_exact_objective():
    """On the support the gradient of J = E r - β KL vanishes at π_ref exp(r/β)/Z (autograd)."""
    ref = torch.log(torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64))
    r = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    theta = gibbs_logprobs(ref, r, 0.7).clone().requires_grad_()
    losses.kl_regularized_objective(torch.log_softmax(theta, -1), ref, r, 0.7).backward()
    assert theta.grad.abs().max() < 1e-12


def test_hypo_stays_on_support_with_small_kl(result):
    """HyPO's minimiser puts nothing on y3; its KL is finite and ≤ log 2; on the DPO construction
    with δ = 0.1 its objective is +∞."""
    assert result.series["hypo_probs"][2] == 0.0
    assert 0 < result.series["hypo_kl"] <= math.log(2)
    assert result.claim("hypo_rejects_dpo_policy").value == math.inf
