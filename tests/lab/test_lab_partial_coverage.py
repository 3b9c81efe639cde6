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
    """Mass δ on y3 scales π(y1) and π(y2) by the same 1 - δ, so h and the loss do not move; the
    loss gaps the run reports must be round-off, and δ = 0 is the only construction with finite KL."""
    for name in ("dpo", "ipo"):
        rows = result.series[name]
        assert max(abs(g) for g in rows["loss_gap"]) < 1e-12
        for delta, kl, j in zip(rows["delta"], rows["kl"], rows["J"]):
            assert (kl == math.inf) == (delta > 0)
            assert (j == -math.inf) == (delta > 0)
        assert rows["pi_y3"] == pytest.approx(list(rows["delta"]), abs=1e-15)


@pytest.mark.parametrize("delta", [0.0, 0.1, 0.5])
def test_population_losses_at_the_constructions_by_hand(delta):
    """r* = (1, 0, ·), β = 0.5, p = σ(1) ≈ 0.731059. DPO: E[-log σ(βh)] is minimised at βh = 1 with
    value the label entropy H(p) ≈ 0.582203. IPO: p(h - 1)² + (1 - p)(h + 1)² (1/(2β) = 1) is
    minimised at h = 2p - 1 with value 4p(1 - p) ≈ 0.786448. Both computed through the module's
    own losses at the constructed policies, and nudging h by ±0.01 must raise them."""
    p = 1 / (1 + math.exp(-1))
    ref = torch.log(torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64))
    cases = ((losses.dpo_loss, 2.0, -(p * math.log(p) + (1 - p) * math.log(1 - p))),
             (losses.ipo_loss, 2 * p - 1, 4 * p * (1 - p)))
    for loss, h, value in cases:
        at = float(pc._offline_population_loss(pc._constructed_policy(h, delta), ref, p, 0.5, loss))
        assert at == pytest.approx(value, abs=1e-12)
        for nudge in (-0.01, 0.01):
            moved = float(pc._offline_population_loss(pc._constructed_policy(h + nudge, delta), ref, p, 0.5, loss))
            assert moved > at + 1e-6


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


def test_rlhf_with_a_little_reference_mass_on_y3(result):
    """π_ref = ((1-ε)/2, (1-ε)/2, ε), r̂ = [1, 0, 10], β = 0.5: π ∝ ((1-ε)/2·e², (1-ε)/2, ε·e^20), so
    at ε = 1e-6 y3 takes 485/(485 + 4.19) ≈ 0.991 of the mass; KL = Σ π log(π/π_ref) stays ≤ 40."""
    rows = result.series["rlhf_eps"]
    for eps, pi3, kl in zip(rows["eps"], rows["pi_y3"], rows["kl"]):
        weights = [(1 - eps) / 2 * math.exp(2), (1 - eps) / 2, eps * math.exp(20)]
        probs = [w / sum(weights) for w in weights]
        ref = [(1 - eps) / 2, (1 - eps) / 2, eps]
        assert pi3 == pytest.approx(probs[2], rel=1e-12)
        assert kl == pytest.approx(sum(p * math.log(p / q) for p, q in zip(probs, ref)), rel=1e-10)
        assert kl <= 40
    assert result.claim("rlhf_keeps_y3_at_zero").value == -math.inf


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


def _hypo_one_dimensional(p, beta, lam, eps):
    """HyPO's exact minimiser, independently of the lab: with π = ((1-δ)a, (1-δ)(1-a), δ) the DPO term
    is p·softplus(-βu) + (1-p)·softplus(βu), u = logit a, and min over δ of λ[(1-δ)K(a) + kl(δ‖ε)]
    is -λ log(ε + (1-ε)e^{-K(a)}) at δ* = ε/(ε + (1-ε)e^{-K(a)}) (Gibbs variational principle).
    Golden-section search on u; returns (a, δ*, KL)."""
    def k_half(a):
        return a * math.log(2 * a) + (1 - a) * math.log(2 * (1 - a))

    def softplus(x):
        return max(x, 0) + math.log1p(math.exp(-abs(x)))

    def g(u):
        a = 1 / (1 + math.exp(-u))
        kl_part = -lam * math.log(eps + (1 - eps) * math.exp(-k_half(a)))
        return p * softplus(-beta * u) + (1 - p) * softplus(beta * u) + kl_part

    lo, hi, r = -10.0, 10.0, (math.sqrt(5) - 1) / 2
    for _ in range(200):
        x1, x2 = hi - r * (hi - lo), lo + r * (hi - lo)
        lo, hi = (lo, x2) if g(x1) < g(x2) else (x1, hi)
    a = 1 / (1 + math.exp(-(lo + hi) / 2))
    k = k_half(a)
    d = eps / (eps + (1 - eps) * math.exp(-k))
    kl = (1 - d) * k + d * math.log(d / eps) + (1 - d) * math.log((1 - d) / (1 - eps))
    return a, d, kl


def test_hypo_over_all_three_responses_matches_the_1d_solution(result):
    """L-BFGS over three logits (mass on y3 allowed) against the 1-d reduction above, every ε, λ > 0 and
    start: same a, same π(y3) (relative 1e-4), same KL. HyPO's y3 mass is then between ε and 2ε."""
    h, p = result.series["hypo_sweep"], 1 / (1 + math.exp(-1))
    checked = 0
    for i, lam in enumerate(h["lambda"]):
        if lam == 0:
            continue
        a, d, kl = _hypo_one_dimensional(p, 0.5, lam, h["eps"][i])
        assert h["a"][i] == pytest.approx(a, abs=1e-5)
        assert h["pi_y3"][i] == pytest.approx(d, rel=1e-4)
        assert h["kl"][i] == pytest.approx(kl, abs=1e-6)
        assert h["eps"][i] <= h["pi_y3"][i] <= 2 * h["eps"][i]
        checked += 1
    assert checked == 2 * 3 * 5  # 2 starts × 3 ε × 5 positive λ


def test_dpo_keeps_whatever_mass_its_start_had(result):
    """λ = 0: the DPO gradient in the logits is ∝ (1, -1, 0), so θ3 and θ1 + θ2 stay put. From uniform,
    θ = (t, -t, 0) with 2t = h = (r*1 - r*2)/β = 2: π(y3) = 1/(1 + 2 cosh 1) ≈ 0.244728 for every ε.
    From the construction with δ = 0.5, already a DPO minimiser, π(y3) stays 0.5."""
    h = result.series["hypo_sweep"]
    for i, lam in enumerate(h["lambda"]):
        if lam == 0:
            expected = 1 / (1 + 2 * math.cosh(1)) if h["start"][i] == 0 else 0.5
            assert h["pi_y3"][i] == pytest.approx(expected, abs=1e-8)


def test_hypo_rejects_mass_outside_an_empty_support(result):
    """π_ref(y3) = 0: any policy with δ > 0 has KL = ∞, so HyPO's objective is +∞ there."""
    assert result.claim("hypo_rejects_dpo_policy").value == math.inf
