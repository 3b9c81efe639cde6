"""The real SmolLM2-135M-Instruct, loaded once per session for the tests that use it."""

import pytest
import torch


@pytest.fixture(scope="session")
def smollm2(smollm2_dir):
    """(model in eval mode, tokenizer): the plain folder hybridpo.zoo converts the Q4_1 GGUF into
    (weights dequantized to fp32; the `smollm2_dir` fixture of tests/conftest.py)."""
    from transformers import AutoModelForCausalLM

    from hybridpo.data import load_tokenizer

    model = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    return model.eval(), load_tokenizer(str(smollm2_dir))
