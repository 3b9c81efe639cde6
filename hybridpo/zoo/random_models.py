"""Random models built from a transformers config: one seeded builder for every family in ARCHS
(GPT-NeoX, Llama, Qwen2, Mistral) at the sizes the tests and benchmarks use."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

@dataclass(frozen=True)
class Shape:
    layers: int
    hidden: int
    heads: int  # attention (query) heads
    kv_heads: int  # key / value heads: grouped-query attention when < heads (GPT-NeoX: = heads)
    intermediate: int  # MLP width
    extra: dict = field(default_factory=dict)  # further config fields of a real model's shape


@dataclass(frozen=True)
class Arch:
    config_class: str  # the transformers config class
    defaults: dict  # config fields every size of this family gets
    sizes: dict[str, Shape]


_TINY = Shape(2, 64, 4, 2, 256)  # CPU tests: head_dim 16, 2 query heads per key / value head
_SMALL = Shape(4, 128, 4, 2, 512)

ARCHS: dict[str, Arch] = {
    # Pythia: rotary over 25% of each head, parallel residual, untied head
    "gpt-neox": Arch(
        "GPTNeoXConfig",
        dict(rotary_pct=0.25, max_position_embeddings=2048, use_parallel_residual=True, tie_word_embeddings=False),
        {"tiny": Shape(2, 64, 4, 4, 256), "small": Shape(4, 128, 4, 4, 512),
         "pythia-70m": Shape(6, 512, 8, 8, 2048)},  # EleutherAI/pythia-70m's shape
    ),
    # tied like SmolLM2 and Llama-3.2-1B/3B (Llama-3-8B is untied: tie_word_embeddings=False)
    "llama": Arch(
        "LlamaConfig",
        dict(max_position_embeddings=2048, tie_word_embeddings=True),
        {"tiny": _TINY, "small": _SMALL,
         "smollm2-135m": Shape(30, 576, 9, 3, 1536, extra=dict(  # HuggingFaceTB/SmolLM2-135M(-Instruct)'s config
             vocab_size=49152, max_position_embeddings=8192, rope_theta=100000.0, rms_norm_eps=1e-5))},
    ),
    # q / k / v projections carry biases (transformers' Qwen2 always has them); tied like Qwen2.5-0.5B
    "qwen2": Arch("Qwen2Config", dict(max_position_embeddings=2048, tie_word_embeddings=True), {"tiny": _TINY, "small": _SMALL}),
    # untied like Mistral-7B. sliding_window=4096 (Mistral-7B-v0.1's) exceeds every position, so it
    # never cuts, but transformers still takes its sliding-window mask path (create_sliding_window_
    # causal_mask, and the window is passed to the attention kernel); None (v0.3) is plain causal.
    "mistral": Arch(
        "MistralConfig",
        dict(max_position_embeddings=2048, tie_word_embeddings=False, sliding_window=4096),
        {"tiny": _TINY, "small": _SMALL},
    ),
}
SIZES = sorted({size for arch in ARCHS.values() for size in arch.sizes})  # every size of some family


def random_config(arch: str, size: str, tokenizer_or_vocab, **overrides):
    """The transformers config of a random `arch` model at `size`; `overrides` set any config field.

    A tokenizer gives the vocabulary (its length rounded up to 128s, as Pythia's 50,277 -> 50,304,
    unless the size fixes it: smollm2-135m has 49,152) and the bos / eos / pad ids; an int gives the
    vocabulary alone (set the ids through overrides).
    """
    import transformers

    if arch not in ARCHS:
        raise ValueError(f"arch={arch!r}; choose from {list(ARCHS)}")
    family = ARCHS[arch]
    if size not in family.sizes:
        raise ValueError(f"size={size!r} for arch={arch!r}; choose from {list(family.sizes)}")
    shape = family.sizes[size]
    fields: dict = dict(hidden_size=shape.hidden, num_hidden_layers=shape.layers,
                        num_attention_heads=shape.heads, intermediate_size=shape.intermediate)
    if arch != "gpt-neox":  # GPT-NeoX has no grouped-query attention
        fields["num_key_value_heads"] = shape.kv_heads
    n_tokens = tokenizer_or_vocab if isinstance(tokenizer_or_vocab, int) else len(tokenizer_or_vocab)
    fields["vocab_size"] = n_tokens if isinstance(tokenizer_or_vocab, int) else 128 * math.ceil(n_tokens / 128)
    fields.update(family.defaults)
    fields.update(shape.extra)
    if not isinstance(tokenizer_or_vocab, int):
        tok = tokenizer_or_vocab
        eos = tok.eos_token_id
        fields.update(bos_token_id=tok.bos_token_id if tok.bos_token_id is not None else eos,
                      eos_token_id=eos, pad_token_id=tok.pad_token_id)
    fields.update(overrides)
    if n_tokens > fields["vocab_size"]:
        raise ValueError(f"{arch} {size}: vocab_size={fields['vocab_size']} is smaller than the tokenizer's "
                         f"{n_tokens} tokens; pass vocab_size= or a matching tokenizer")
    return getattr(transformers, family.config_class)(**fields)


def random_model(arch: str, size: str, tokenizer_or_vocab, *, seed: int = 0, **overrides):
    """A randomly initialised causal LM (fp32, as constructed: training mode) of random_config's shape.

    The weights depend only on the config and the seed: torch.manual_seed(seed), then the model class.
    """
    import torch
    from transformers import AutoModelForCausalLM

    config = random_config(arch, size, tokenizer_or_vocab, **overrides)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def init_model(arch: str, size: str, tokenizer, out_dir: str | Path, seed: int = 0, **overrides) -> Path:
    """Save a random model (`random_model`) and its tokenizer to `out_dir`; `tokenizer` is a
    loaded tokenizer or anything hybridpo.data.load_tokenizer takes (tokenizer.json, folder, hub name)."""
    from hybridpo.data import load_tokenizer

    tok = load_tokenizer(str(tokenizer)) if isinstance(tokenizer, (str, Path)) else tokenizer
    model = random_model(arch, size, tok, seed=seed, **overrides)
    out = Path(out_dir)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out
