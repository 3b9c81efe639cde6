"""A tiny random GPT-NeoX with the real Pythia tokenizer, saved once for the multi-process runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from multi_runs import PYTHIA_TOKENIZER


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """hybridpo.zoo.init_model("gpt-neox", "tiny", ...): 2 layers, width 64, vocab 50,304."""
    from hybridpo.zoo import init_model

    return init_model("gpt-neox", "tiny", str(PYTHIA_TOKENIZER), tmp_path_factory.mktemp("distributed") / "tiny")
