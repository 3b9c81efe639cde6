"""Tiny random models of each architecture family (and where the real SmolLM2 file lies).

A fresh transformers model has every norm weight 1 and every bias 0, which hides a norm or bias
applied at the wrong place (or not at all): `_roughen` gives them non-trivial values. Weights are
drawn at std 0.3 (not 0.02) so attention is sharp and a mask error shows in the numbers. Every
Llama-family config uses grouped-query attention (fewer key / value heads than query heads).

FAMILIES names one config per case the fast paths treat differently:
- neox: the control (GPT-NeoX, the architecture the fast paths were built on)
- llama / llama_tied: Llama with an untied and a tied (SmolLM2-like) head
- qwen2: q / k / v projections with biases, tied head
- mistral: Mistral v0.1's sliding window of 4096 (longer than any test sequence, but transformers
  then builds sliding-window cache layers); mistral_window: a window of 6, shorter than the test
  sequences, where every path must still agree with the padded one (v0.2+ has no window: Llama)
"""

from __future__ import annotations


import torch
from transformers import (
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    Qwen2Config,
)

VOCAB = 97
PAD, EOS = 1, 0

_COMMON = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, intermediate_size=64,
               max_position_embeddings=256, initializer_range=0.3, bos_token_id=2, eos_token_id=EOS,
               pad_token_id=PAD)
_GQA = dict(num_attention_heads=4, num_key_value_heads=2)


def family_config(name: str, attn: str = "sdpa"):
    if name == "neox":
        cfg = GPTNeoXConfig(**_COMMON, num_attention_heads=4, tie_word_embeddings=False, rotary_pct=0.5)
    elif name == "llama":
        cfg = LlamaConfig(**_COMMON, **_GQA, tie_word_embeddings=False)
    elif name == "llama_tied":
        cfg = LlamaConfig(**_COMMON, **_GQA, tie_word_embeddings=True)
    elif name == "qwen2":
        cfg = Qwen2Config(**_COMMON, **_GQA, tie_word_embeddings=True)
    elif name == "mistral":
        cfg = MistralConfig(**_COMMON, **_GQA, tie_word_embeddings=False, sliding_window=4096)
    elif name == "mistral_window":
        cfg = MistralConfig(**_COMMON, **_GQA, tie_word_embeddings=False, sliding_window=6)
    else:
        raise ValueError(f"family {name!r}; choose from {FAMILIES}")
    cfg._attn_implementation = attn
    return cfg


FAMILIES = ("neox", "llama", "llama_tied", "qwen2", "mistral", "mistral_window")
SHARED = ("neox", "llama", "llama_tied", "qwen2")  # those whose prompt pass is shared (no sliding window)


def _roughen(model: torch.nn.Module, seed: int) -> None:
    """Norm weights 1 + N(0, 0.3²) and every bias N(0, 0.2²), in place (see the module docstring)."""
    g = torch.Generator().manual_seed(seed + 1000)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:  # a norm's scale
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))


def family_model(name: str, *, attn: str = "sdpa", seed: int = 0, head: str = "causal_lm"):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    cfg = family_config(name, attn)
    torch.manual_seed(seed)
    if head == "causal_lm":
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    else:
        cfg.num_labels = 1
        model = AutoModelForSequenceClassification.from_config(cfg, dtype=torch.float32)
    _roughen(model, seed)
    return model.eval()


def has_biases(model) -> bool:
    return any(n.endswith("bias") for n, _ in model.named_parameters())


# ---------------------------------------------------------------------------------------------
# the real pretrained model (a Q4_1 GGUF that transformers dequantizes to fp32)

