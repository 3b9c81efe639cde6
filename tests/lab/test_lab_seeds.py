"""Robustness: every claim of every experiment also holds at seeds 1 and 2 (about 1 min of CPU per
seed, so marked slow; seed 0 is covered by the per-experiment tests)."""

import pytest

from hybridpo.lab.registry import EXPERIMENTS, experiment


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("name", list(EXPERIMENTS))
def test_every_claim_holds_at_other_seeds(name, seed):
    result = experiment(name).run(seed=seed)
    assert [c.name for c in result.claims if not c.holds] == []
