"""Shared fixtures: the real Pythia tokenizer from ../shared and a tiny random GPT-NeoX saved once."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[3] / "shared"
PYTHIA_TOKENIZER = SHARED / "tokenizers" / "pythia" / "tokenizer.json"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """`hybridpo init-model --size tiny` with the real tokenizer (vocab 50,304, 2 layers, width 64)."""
    from hybridpo.zoo import init_model

    return init_model("gpt-neox", "tiny", str(PYTHIA_TOKENIZER), tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture
def small_vocab_model():
    """A 3-layer GPT-NeoX over a 96-token vocabulary (fast, for model-wiring tests)."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    config = GPTNeoXConfig(
        vocab_size=96, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
        rotary_pct=0.25, max_position_embeddings=128, tie_word_embeddings=False, eos_token_id=0, pad_token_id=1,
    )
    return GPTNeoXForCausalLM(config).eval()
