"""Fixtures every test folder may use."""

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"  # ../shared beside the repository


@pytest.fixture(scope="session")
def tok():
    """The real Pythia tokenizer from ../shared, loaded once per test session."""
    from hybridpo.data import load_tokenizer

    return load_tokenizer(str(SHARED / "tokenizers" / "pythia" / "tokenizer.json"))
