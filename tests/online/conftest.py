"""Fixtures for the online-method runs: a tiny random GPT-NeoX with the real Pythia tokenizer and a
tiny reward model trained from it (helpers in online_runs.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from online_runs import PYTHIA_TOKENIZER, train


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """`hybridpo init-model --size tiny` (2 layers, width 64, vocab 50,304) with the real tokenizer."""
    from hybridpo.zoo import init_model

    return init_model("gpt-neox", "tiny", str(PYTHIA_TOKENIZER), tmp_path_factory.mktemp("online") / "tiny")


@pytest.fixture(scope="session")
def reward_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A reward model trained for 3 steps by `method: rm` (Bradley-Terry, Eq. 3) from the tiny model."""
    out = tmp_path_factory.mktemp("online") / "rm"
    return train("rm.yaml", out, f"model.name_or_path={tiny_model_dir}", "optim.max_steps=3") / "final"
