"""extrapolation-linear and extrapolation-tabular at their real settings (|Y| = 100 / 500,
10,000 pairs, 1,000 / 5,000 iterations)."""

import pytest

from hybridpo.lab import extrapolation_linear as lin
from hybridpo.lab import extrapolation_tabular as tab


@pytest.fixture(scope="module")
def linear():
    return lin.run(seed=0)


@pytest.fixture(scope="module")
def tabular():
    return tab.run(seed=0)


def test_linear_claims_hold(linear):
    assert [c.name for c in linear.claims if not c.holds] == []


def test_linear_mass_moves_to_the_unseen_best(linear):
    """Both methods start at uniform: log(1/100) ≈ -4.605 for every response. The best unseen
    response lies in the second half (index ≥ 50) and must gain more than 1 nat (e ≈ 2.7× its
    uniform probability); the preferred responses' mean log-prob must lose more than 1 nat."""
    assert linear.settings["best_unseen_response"] >= 50
    for method in ("dpo", "rlhf"):
        s = linear.series[method]
        assert s["best_unseen_logp"][0] == pytest.approx(-4.60517, abs=1e-5)
        assert s["best_unseen_logp"][-1] - s["best_unseen_logp"][0] > 1.0
        assert s["preferred_mean_logp"][-1] - s["preferred_mean_logp"][0] < -1.0


def test_tabular_claims_hold(tabular):
    assert [c.name for c in tabular.claims if not c.holds] == []


def test_tabular_softmax_sgd_conserves_the_in_data_logit_sum(tabular):
    """Each pair adds +g to θ(y+) and -g to θ(y-), so Σ_in θ stays 0 (float64 round-off only),
    and OOD logits never move: OOD mass can only fall (Jensen), never above 1/|Y| = 0.002."""
    s = tabular.series["dpo_softmax_sgd"]
    assert max(abs(v) for v in s["in_logit_sum"]) < 1e-8
    assert max(s["ood_mean_prob"]) <= 1 / 500 + 1e-15
    assert s["ood_mean_prob"][-1] < s["ood_mean_prob"][0]


def test_tabular_linear_sgd_rises_like_the_paper(tabular):
    """π = w/Σw with plain SGD: the mean OOD probability rises monotonically from 1/500."""
    s = tabular.series["dpo_linear_sgd"]["ood_mean_prob"]
    assert s[0] == pytest.approx(1 / 500)
    assert s[-1] > s[0]
    assert all(b >= a - 1e-15 for a, b in zip(s, s[1:]))


def test_tabular_other_settings_fall(tabular):
    for key in ("dpo_softmax_adam", "dpo_linear_adam", "rlhf_linear_sgd"):
        assert tabular.series[key]["ood_mean_prob"][-1] < 1 / 500, key
    hypo = tabular.series["hypo_linear_sgd"]["ood_mean_prob"][-1]
    dpo = tabular.series["dpo_linear_sgd"]["ood_mean_prob"][-1]
    assert abs(hypo - 1 / 500) < abs(dpo - 1 / 500)


def test_a_diverging_run_stops_with_the_iteration():
    """With an absurd step the w/Σw form's 1/w gradients explode; the run must fail loudly, not
    write a curve of nans. (Plain SGD on logits with lr = 1e300 overflows to a non-finite loss.)"""
    cfg = tab.Config(n_responses=20, n_seen=10, n_pairs=200, iterations=50, sgd_lr=1e300)
    with pytest.raises(FloatingPointError, match="at iteration"):
        tab.run(seed=0, cfg=cfg)
