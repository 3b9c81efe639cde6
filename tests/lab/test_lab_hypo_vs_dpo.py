"""hypo-vs-dpo at its real settings (1,500 Adam steps per method)."""

import pytest

from hybridpo.lab import hypo_vs_dpo as hd


@pytest.fixture(scope="module")
def result():
    return hd.run(seed=0)


def test_every_claim_holds(result):
    assert [c.name for c in result.claims if not c.holds] == []


def test_dpo_drifts_and_hypo_does_not(result):
    """π_ref gives O about 10·e^-12 ≈ 6e-5 relative mass, so a policy with most of its mass on O
    has KL ≳ 12 - log 10 ≈ 9.7 nats; HyPO at every λ stays within 2·KL_rlhf + 0.1 and its J under
    r* beats DPO's. RLHF's KL obeys Lemma 4.1's 2R'/β."""
    s, final = result.series, {k: v["kl"][-1] for k, v in result.series.items()}
    assert s["dpo"]["outside_mass"][-1] > 0.5 and final["dpo"] > 9.7
    assert final["rlhf"] <= result.settings["lemma_4_1_bound_2Rp_over_beta"]
    for lam in result.settings["lambdas"]:
        key = f"hypo_lambda_{lam:g}"
        assert final[key] <= 2 * final["rlhf"] + 0.1
        assert s[key]["J"][-1] > s["dpo"]["J"][-1]
        assert s[key]["outside_mass"][-1] < 0.01
