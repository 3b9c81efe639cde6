"""extrapolation-linear and extrapolation-tabular at their real settings (|Y| = 100 / 500,
10,000 pairs, 5,000 DPO iterations each)."""

import math

import pytest
import torch

from hybridpo import losses

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


def test_linear_instance_is_the_papers():
    """99 rows on the simplex (≥ 0, ℓ1 norm 1) plus [1, 0, …, 0] last; w* = [5, U(-2, 2)…]. On the
    simplex ⟨w*, φ⟩ ≤ max_i w*_i = 5 with equality only at [1, 0, …, 0]: the appended one is the best."""
    inst = lin.make_instance(lin.Config(), seed=0)
    phi, w_star, r_star = inst["phi"], inst["w_star"], inst["r_star"]
    assert phi.shape == (100, 16) and (phi >= 0).all()
    assert torch.allclose(phi.sum(1), torch.ones(100, dtype=torch.float64), atol=1e-12)
    assert phi[-1].tolist() == [1.0] + [0.0] * 15
    assert w_star[0] == 5.0 and (w_star[1:].abs() <= 2).all()
    assert r_star[-1] == pytest.approx(5.0, abs=1e-12) and r_star[:-1].max() < 5.0
    assert inst["chosen"].max() < 50 and inst["rejected"].max() < 50 and len(inst["chosen"]) == 10_000


def test_dpo_table_loss_is_the_mean_over_the_sampled_pairs():
    """The (50, 50) count table is a regrouping of the 10,000 pairs: its weighted loss equals the
    plain mean of losses.dpo_loss over the pair list, for any policy; at π = π_ref it is log 2."""
    cfg = lin.Config()
    inst = lin.make_instance(cfg, seed=0)
    m, n = cfg.n_seen, cfg.n_responses
    table = torch.bincount(inst["chosen"] * m + inst["rejected"], minlength=m * m).to(torch.float64).view(m, m)
    table /= cfg.n_pairs
    gen = torch.Generator().manual_seed(5)
    logp = torch.log_softmax(torch.randn(2, n, generator=gen, dtype=torch.float64), -1)
    ref = torch.full((n,), -math.log(n), dtype=torch.float64)
    beta = torch.tensor([0.5, 2.0], dtype=torch.float64)
    c, r = inst["chosen"], inst["rejected"]
    direct = losses.dpo_loss(logp[:, c], logp[:, r], ref[c], ref[r], beta[:, None]).mean(-1)
    assert torch.allclose(lin.dpo_table_loss(logp, ref, table, beta), direct, atol=1e-12)
    assert torch.allclose(lin.dpo_table_loss(ref.expand(2, n), ref, table, beta),
                          torch.full((2,), math.log(2), dtype=torch.float64), atol=1e-12)


def test_linear_runs_start_at_uniform_and_move_mass_to_the_best(linear):
    """w = [1, …, 1] is π_ref in both forms (each φ sums to 1): log(1/100) ≈ -4.60517 for every
    response. Softmax, β = 1: the best gains more than 2 nats (e² ≈ 7.4× uniform), the preferred
    mean loses more than 0.3."""
    for method in ("dpo", "rlhf"):
        for key, s in linear.series[method].items():
            assert s["best_logp"][0] == pytest.approx(-math.log(100), abs=1e-12), key
            assert s["preferred_mean_logp"][0] == pytest.approx(-math.log(100), abs=1e-12), key
        s = linear.series[method]["softmax_beta_1"]
        assert s["best_logp"][-1] - s["best_logp"][0] > 2.0
        assert s["preferred_mean_logp"][-1] - s["preferred_mean_logp"][0] < -0.3


def test_softmax_dpo_and_rlhf_share_the_gibbs_fixed_point(linear):
    """Softmax-linear class: DPO's implicit reward β⟨w - w_ref, φ⟩ is linear, so DPO's minimiser is
    the BT fit reparameterised, w = w_ref + ŵ/β (up to the constant [1, …, 1] direction), i.e. the
    Gibbs policy π_ref e^{r̂/β}/Z that RLHF ascends to (lecture §22.4). At β = 3 both runs have
    converged (within 1e-3 of log softmax(r̂/β) at the best response); at β = 1 within 0.05."""
    inst = lin.make_instance(lin.Config(), seed=0)
    w_hat = torch.tensor(linear.settings["reward_model_w"], dtype=torch.float64)
    for beta, tol in ((3.0, 1e-3), (1.0, 0.05)):
        gibbs = float(torch.log_softmax(inst["phi"] @ w_hat / beta, -1)[-1])
        for method in ("dpo", "rlhf"):
            assert linear.series[method][f"softmax_beta_{beta:g}"]["best_logp"][-1] == pytest.approx(gibbs, abs=tol)


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
