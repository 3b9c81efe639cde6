"""example-6-1, the paper's features φ = (1, 0), (½, ½), (0, 1): policies derived by hand."""

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
    """w* = [10, 1]: r* = (10, 10/2 + 1/2, 1) = (10, 5.5, 1). The softmax-linear class contains
    π_ref e^{r*/β} (w = w_ref + w*/β), so at β = 1 DPO's policy is softmax(10, 5.5, 1):
    (1, e^-4.5, e^-9)/(1 + e^-4.5 + e^-9) ≈ (0.98889, 0.01099, 0.00012): y1 up, y2 and y3 down."""
    case = result.series["as_written"]
    assert case["r_star"] == pytest.approx([10.0, 5.5, 1.0], abs=1e-12)
    expected = _softmax([10.0, 5.5, 1.0])
    for key in ("dpo", "rlhf", "optimal"):
        assert case[key] == pytest.approx(expected, abs=1e-9), key
    assert case["dpo"][0] > 1 / 3 > case["dpo"][1] > case["dpo"][2]


def test_fitted_reward_is_the_papers_r_star_plus_c(result):
    """Only φ(y1) - φ(y2) = (½, -½) is seen, so the BT fit pins ŵ1 - ŵ2 = 2·(10 - 5.5) = 9; L-BFGS
    from ŵ = 0 stays in the span of the gradients, (1, -1), and returns ŵ = (4.5, -4.5). Its
    r̂ = (4.5, 0, -4.5) is r* + c with c = -5.5 on every response, y3 included."""
    case = result.series["as_written"]
    assert case["r_hat"] == pytest.approx([4.5, 0.0, -4.5], abs=1e-9)
    assert case["fitted_shift_c"] == pytest.approx([-5.5] * 3, abs=1e-9)


def test_every_c_and_beta_give_the_same_signs(result):
    """π ∝ e^{(r* + c)/β}: the e^{c/β} factor cancels, so each row of rlhf_by_shift is softmax(r*/β).
    Over the β sweep DPO is softmax(r*/β) too, and π(y2) ≤ 1/3 since 2e^{5.5/β} ≤ e^{10/β} + e^{1/β}."""
    case, s = result.series["as_written"], result.settings
    assert len(case["rlhf_by_shift"]) == len(s["shifts"])
    for row in case["rlhf_by_shift"]:
        assert row == pytest.approx(_softmax([10.0, 5.5, 1.0]), abs=1e-12)
    for beta, row in zip(s["betas"], case["dpo_by_beta"]):
        expected = _softmax([10 / beta, 5.5 / beta, 1 / beta])
        assert row == pytest.approx(expected, abs=1e-9), beta
        assert row[0] > 1 / 3 and row[1] < 1 / 3 and row[2] < 1 / 3, beta


def test_repair_mirrors_the_example(result):
    """w* = [1, 10] swaps the two coordinates, and with them y1 ↔ y3 (φ(y2) is symmetric):
    r* = (1, 5.5, 10) and every policy is the as-written one reversed: the unseen y3 gets 0.98889,
    y1 and y2 fall. This is the paper's sentence."""
    a, s = result.series["as_written"], result.series["repair"]
    assert s["r_star"] == pytest.approx([1.0, 5.5, 10.0], abs=1e-12)
    assert s["dpo"] == pytest.approx(a["dpo"][::-1], abs=1e-9)
    assert s["dpo"][2] == pytest.approx(0.98889, abs=1e-5)
    assert s["dpo"][0] < 1 / 3 and s["dpo"][1] < 1 / 3 < s["dpo"][2]


def test_sampled_dpo_ends_at_the_label_frequency(result):
    """On N sampled pairs the DPO loss is p̂·softplus(-βs/2) + (1 - p̂)·softplus(βs/2), s = w1 - w2,
    minimised at βs/2 = logit(p̂); the logits ⟨w, φ⟩ = (w1, (w1 + w2)/2, w2) are then (s, s/2, 0)
    up to a constant. P(y1 ≻ y2) = σ(4.5) ≈ 0.989, so p̂ is near it (1,000 pairs: sd ≈ 0.003)."""
    beta = result.settings["beta"]
    for key, p_true in (("as_written", 1 / (1 + math.exp(-4.5))), ("repair", 1 / (1 + math.exp(4.5)))):
        s = result.series[key]["sampled_dpo"]
        p_hat = s["p_hat"]
        assert abs(p_hat - p_true) < 0.015, key
        half = math.log(p_hat / (1 - p_hat)) / beta  # s/2
        assert s["probs"][-1] == pytest.approx(_softmax([2 * half, half, 0.0]), abs=1e-6), key
        assert s["probs"][0] == pytest.approx([1 / 3] * 3, abs=1e-15)


def test_linear_coverage_by_hand(result):
    """μ uniform on {y1, y2}: Σ = ½(φ1φ1ᵀ + φ2φ2ᵀ) = [[5/8, 1/8], [1/8, 1/8]], det 1/16, so
    Σ⁻¹ = [[2, -2], [-2, 10]] and ‖φ(y)‖²_{Σ⁻¹} = (2, ¼(2 - 4 + 10), 10) = (2, 2, 10)."""
    assert result.settings["coverage_phi_norms_sigma_inv"] == pytest.approx([2.0, 2.0, 10.0], abs=1e-9)


def test_the_claims_can_fail():
    """The sign claims are measured, not fixed: handing the as-written slot the repair's reward
    must break the as-written claims (y1 then falls, y3 rises)."""
    flipped = ex.run(seed=0, cfg=ex.Config(w_as_written=(1.0, 10.0), iterations=20))
    failing = {c.name for c in flipped.claims if not c.holds}
    assert {"as_written_optimum_in_data", "as_written_y1_rises", "as_written_y3_falls",
            "as_written_sentence_never_holds", "sampled_dpo_signs"} <= failing
