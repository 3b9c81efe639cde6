"""Random models built from a transformers config (tests, benchmarks, the gold task)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

# init-model shapes: (layers, hidden, heads, intermediate). pythia-70m is EleutherAI/pythia-70m's.
SIZES = {"tiny": (2, 64, 4, 256), "small": (4, 128, 4, 512), "pythia-70m": (6, 512, 8, 2048)}
ARCHS = ("gpt-neox",)


def gpt_neox_config(size: str, tokenizer):
    """A Pythia-shaped GPTNeoXConfig for `size`; vocab = the tokenizer's, rounded up to 128s.

    Pythia's 50,277-token tokenizer gives 50,304 rows; the head is untied and rotary covers 25% of
    each head, as in Pythia (pythia-70m: 6 layers, width 512, 8 heads, MLP 2048, 2,048 positions).
    """
    from transformers import GPTNeoXConfig

    if size not in SIZES:
        raise ValueError(f"size={size!r}; choose from {list(SIZES)}")
    layers, hidden, heads, intermediate = SIZES[size]
    eos = tokenizer.eos_token_id
    return GPTNeoXConfig(
        vocab_size=128 * math.ceil(len(tokenizer) / 128),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        rotary_pct=0.25,
        max_position_embeddings=2048,
        use_parallel_residual=True,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
    )


def init_model(arch: str, size: str, tokenizer_path: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Save a randomly initialised Pythia-architecture model + its tokenizer to `out_dir`."""
    from transformers import GPTNeoXForCausalLM

    from hybridpo.data import load_tokenizer

    if arch not in ARCHS:
        raise ValueError(f"arch={arch!r}; choose from {list(ARCHS)}")
    tokenizer = load_tokenizer(str(tokenizer_path))
    config = gpt_neox_config(size, tokenizer)
    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(config)
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
