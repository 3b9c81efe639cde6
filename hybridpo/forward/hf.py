"""The thin layer that talks to transformers / peft internals, so the layouts above it do not.

- `unwrap_model` / `base_model`: the transformers model under DDP-style and peft wrappers;
- `forward_params`: the keyword names a model's forward takes (`logits_to_keep`, `cache`, ...);
- `packing_unsupported_reason`: why a model cannot take a custom 4D attention mask;
- `logits_at`: THE forward with the LM head applied only at chosen positions (written once): by the
  model's own forward given a boolean `logits_to_keep` (transformers 5.x; DDP / peft wrappers and
  any logit scaling apply as usual), or, where the forward lacks that, by running the decoder
  (`model.<base_model_prefix>`, also under peft) and `get_output_embeddings()` on the gathered
  hidden states;
- `cache_of` / `plain_layers`: the KV cache of a forward's output, as per-layer (keys, values).
"""

from __future__ import annotations

import functools
import inspect

import torch
from torch import Tensor

# Attention implementations whose kernels take an arbitrary 4D additive mask from transformers'
# masking utilities unchanged (masking_utils._preprocess_mask_arguments returns a 4D mask as-is;
# eager adds it to the scores, sdpa passes it to F.scaled_dot_product_attention as attn_mask).
# flash_attention_* and flex_attention ignore or reject such a mask.
PACKING_ATTENTION = ("eager", "sdpa")

# Config fields of architectures whose CausalLM head does more than `get_output_embeddings()`
# (Gemma-2 soft-capping, Cohere / Granite logit scaling): the decoder + head fallback would skip it.
HEAD_EXTRAS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


class PackingUnsupported(ValueError):
    """The model cannot take a packed layout; the message says why and what to use instead."""


def unwrap_model(model):
    """The transformers model under DDP-style (`.module`) and peft wrappers."""
    while not hasattr(model, "config") and hasattr(model, "module"):
        model = model.module
    return base_model(model)


def base_model(model):
    """The transformers model under a peft wrapper (LoRA layers stay injected), else the model."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def device_of(model) -> torch.device:
    return next(model.parameters()).device


def head_dtype(model) -> torch.dtype:
    """The dtype of the output embedding: the dtype additive masks are built in."""
    return unwrap_model(model).get_output_embeddings().weight.dtype


def forward_params(model) -> frozenset[str]:
    """Keyword names the transformers model under any DDP / peft wrapper takes (they pass through)."""
    return _signature_params(type(unwrap_model(model)))


@functools.cache
def _signature_params(cls) -> frozenset[str]:  # once per model class, not once per call
    return frozenset(inspect.signature(cls.forward).parameters)


def sliding_window(config) -> int | None:
    """The sliding attention window every layer of a model applies (Mistral v0.1: 4096; key k is
    visible from query q iff q - k < window), or None for full attention. transformers builds it
    into its own masks, not into a custom 4D one, so the packed mask must carry it. Configs with
    `layer_types` name their sliding layers there (packing refuses those); `sliding_window` then
    only sizes them."""
    if getattr(config, "layer_types", None) is not None:
        return None
    return getattr(config, "sliding_window", None)


def head_selects_positions(inner) -> bool:
    """Whether `inner.forward` takes a (R, T) boolean `logits_to_keep` and applies its LM head only
    there (transformers 5.x `slice_logits_to_keep`); otherwise the decoder + head fallback is used."""
    return "logits_to_keep" in _signature_params(type(inner)) and _slice_supports_masks()


@functools.cache
def _slice_supports_masks() -> bool:
    try:
        from transformers.modeling_utils import slice_logits_to_keep
    except ImportError:
        return False
    probe = slice_logits_to_keep(torch.zeros(1, 3, 1), torch.tensor([[True, False, True]]))
    return tuple(probe.shape) == (2, 1)


def mask_unsupported_reason(model) -> str | None:
    """Why `model`'s decoder cannot take a custom 4D attention mask (packed rows), or None."""
    inner = unwrap_model(model)
    peft_cfg = getattr(model, "peft_config", None)
    active = getattr(model, "active_adapter", None)
    if isinstance(peft_cfg, dict) and isinstance(active, str) and active in peft_cfg:
        if getattr(peft_cfg[active], "is_prompt_learning", False):
            return "peft prompt-learning adapters add virtual tokens in PeftModel.forward"
    config = getattr(inner, "config", None)
    if config is None:
        return f"{type(inner).__name__} is not a transformers model"
    attn = getattr(config, "_attn_implementation", None) or "eager"
    if attn not in PACKING_ATTENTION:
        return f"attention implementation {attn!r} does not take a custom 4D mask"
    if "sliding_attention" in (getattr(config, "layer_types", None) or ()):
        return "sliding-window layers build their own masks"
    if getattr(inner, getattr(inner, "base_model_prefix", ""), None) is None:
        return f"{type(inner).__name__} has no `{inner.base_model_prefix}` decoder attribute"
    return None


def packing_unsupported_reason(model) -> str | None:
    """Why `model` cannot take a custom 4D attention mask with the head at chosen positions, or None."""
    reason = mask_unsupported_reason(model)
    if reason is not None:
        return reason
    inner = unwrap_model(model)
    config = inner.config
    if not hasattr(inner, "get_output_embeddings") or inner.get_output_embeddings() is None:
        return f"{type(inner).__name__} is not a transformers causal LM"
    if head_selects_positions(inner):
        return None
    # the fallback path calls the decoder and the head directly, outside any wrapper's forward
    if inner is not base_model(model):
        return f"{type(model).__name__}'s forward would be bypassed (needs logits_to_keep masks)"
    for name in HEAD_EXTRAS:
        if getattr(config, name, None) not in (None, 1.0):
            return f"config.{name} transforms logits beyond the output embedding"
    return None


def logits_at(model, inputs: dict, needs_head: Tensor):
    """One forward of `inputs` with the LM head only where `needs_head` (R, T) is True.

    Returns (logits (U, V) in row-major order of the True positions, the forward's output, which
    holds the KV cache when `inputs` asks for one). Raises `PackingUnsupported` when a forward
    ignores the boolean `logits_to_keep`.
    """
    inner = unwrap_model(model)
    if head_selects_positions(inner):
        out = model(**inputs, logits_to_keep=needs_head)
        logits = out.logits
        expected = (int(needs_head.sum()), inner.get_output_embeddings().weight.shape[0])
        if logits.shape != expected:
            raise PackingUnsupported(
                f"{type(inner).__name__}.forward ignored a boolean logits_to_keep (logits "
                f"{tuple(logits.shape)}); use the padded layout"
            )
        return logits, out
    inner = base_model(model)
    out = getattr(inner, inner.base_model_prefix)(**inputs)
    return inner.get_output_embeddings()(out.last_hidden_state[needs_head]), out


def last_logits(model, inputs: dict):
    """A forward whose LM head runs at the last position only: (logits (R, V), the output)."""
    if "logits_to_keep" in forward_params(model):
        inputs = {**inputs, "logits_to_keep": 1}
    out = model(**inputs)
    return out.logits[:, -1], out


def cache_keyword(model) -> str:
    """The name a model's forward gives its KV cache argument (`cache` in newer transformers)."""
    return "cache" if "cache" in forward_params(model) else "past_key_values"


def cache_of(out):
    """The KV cache of a transformers forward's output (`cache` in newer versions, else `past_key_values`)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def plain_layers(cache) -> list[tuple[Tensor, Tensor]] | None:
    """Per layer (keys, values) of a transformers cache made of plain DynamicLayers, else None."""
    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer).__name__ != "DynamicLayer" for layer in layers):
        return None
    return [(layer.keys, layer.values) for layer in layers]


def dynamic_cache(kv: list[tuple[Tensor, Tensor]]):
    """A fresh transformers DynamicCache holding `kv` (a forward appends to it)."""
    from transformers.cache_utils import DynamicCache

    return DynamicCache(ddp_cache_data=kv)
