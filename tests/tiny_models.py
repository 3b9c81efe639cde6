"""Small randomly initialised models shared by the log-prob and sampling tests."""

import torch
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM


def tiny_model(vocab: int = 97, *, seed: int = 0, init: float = 0.3, attn: str = "sdpa") -> GPTNeoXForCausalLM:
    """A 2-layer GPT-NeoX; init 0.3 (not 0.02) makes attention sharp, so a mask error shows."""
    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=256, tie_word_embeddings=False,
        initializer_range=init, attn_implementation=attn,
    )
    return GPTNeoXForCausalLM(cfg).eval()
