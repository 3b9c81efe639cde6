"""The prompts' forward, once per step: keys / values and next-token logits kept for what follows.

A step of HyPO / RLHF / online DPO runs each prompt through the policy ONCE (issue 7):
`prompt_pass(model, prompts)` keeps the prompts' keys / values (with grad) and their last logits;
`logprobs.response_logps(..., prompt_pass=pp)` then forwards only the responses, attending to
those keys through a 4D mask, and `rollout.sample(..., prompt_pass=pp)` seeds its decode cache from
the same pass, detached (the weights do not change in between). The sampler's own prefill, when
there is no pass to share, is `prompt_kv` too.

Layout: the forward is PACKED where prompts can share rows (first-fit, as logprobs' packed layout;
no position is computed for padding) and the keys / values are gathered, differentiably, into the
left-padded (P, heads, W, head_dim) layout every reader takes: prompt i in columns W - |x_i| .. W - 1,
`attn` (P, W) 1 on real tokens. Where packing would not save positions, one left-padded forward.
`prompt_pass_unsupported_reason` says when sharing would change the numbers (active dropout: the
sampler runs in eval mode; gradient checkpointing; a DDP wrapper; a model that cannot pack).

This module borrows logprobs' packed-layout internals (`lp._pack`, `lp._rows_of`, ...) by module
reference: the two are one mechanism split for size, and logprobs needs nothing of this module
but the PromptPass type.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from hybridpo import logprobs as lp


@dataclass
class PromptPass:
    """One forward of P prompts, left-padded to width W, kept for the rest of the step."""

    prompts: list[list[int]]  # the prompts it ran, as given
    kv: list[tuple[Tensor, Tensor]]  # per layer (keys, values), each (P, heads, W, head_dim); with grad when enabled
    last_logits: Tensor  # (P, V) logits at each prompt's last token (predicting the first response token)
    attn: Tensor  # (P, W) long, 1 on real prompt tokens (left padding is 0)


def prompt_pass_unsupported_reason(model) -> str | None:
    """Why `prompt_pass` + `response_logps(prompt_pass=...)` + `rollout.sample(prompt_pass=...)`
    would not give the numbers of separate passes for `model` now, or None when they would."""
    reason = lp.packing_unsupported_reason(model)
    if reason is not None:
        return reason
    inner = lp.unwrap_model(model)
    if lp.sliding_window(inner.config) is not None:
        return "sliding-window layers keep a truncated cache, not plain keys / values"
    if hasattr(model, "module") and not hasattr(model, "get_base_model"):
        return "a DDP-style wrapper expects one forward per backward"
    if model.training and getattr(inner, "is_activation_checkpointing", getattr(inner, "is_gradient_checkpointing", False)):
        return "gradient checkpointing turns the KV cache off in training mode"
    if model.training:
        if any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules()):
            return "active dropout: the sampler runs in eval mode and would see other keys / values"
        config = inner.config
        for name in ("attention_dropout", "hidden_dropout", "attn_pdrop", "resid_pdrop", "dropout"):
            if isinstance(getattr(config, name, None), float) and getattr(config, name) > 0:
                return f"config.{name} > 0: the sampler runs in eval mode and would see other keys / values"
    return None


def prompt_pass(model, prompts: list[list[int]], *, pad_id: int) -> PromptPass:
    """Run the prompts once (grad as the caller has it) and keep their keys / values and last logits.

    The head runs at one position per prompt. Raises `PackingUnsupported` when
    `prompt_pass_unsupported_reason(model)` names a reason.
    """
    if not prompts or any(not p for p in prompts):
        raise ValueError("prompt_pass needs at least one prompt, and no empty prompt")
    reason = prompt_pass_unsupported_reason(model)
    if reason is not None:
        raise lp.PackingUnsupported(f"prompt_pass is not available: {reason}")
    kv, last_logits, attn = prompt_kv(model, prompts, pad_id)
    return PromptPass(prompts=prompts, kv=kv, last_logits=last_logits, attn=attn)


def prefill(model, prompts: list[list[int]], pad_id: int):
    """The prompts once: (per layer (keys, values) (P, heads, W, head_dim) left-padded, or
    transformers' own cache where it is not made of plain layers (e.g. sliding windows); last
    logits (P, V); mask (P, W) long, 1 on real tokens). Packed where the model can pack and packing
    puts several prompts in a row (it then computes fewer positions), else one left-padded forward
    (same numbers, no gather). Grad flows as the caller has it."""
    packs = lp.packing_unsupported_reason(model) is None and lp.sliding_window(lp.unwrap_model(model).config) is None
    if packs and len(lp._rows_of([len(p) for p in prompts])) < len(prompts):
        return packed_prompt_kv(model, prompts, pad_id)
    cache, last_logits, attn = forward_prompts(model, prompts, pad_id)
    kv = plain_layers(cache)
    return (cache if kv is None else kv), last_logits, attn


def prompt_kv(model, prompts: list[list[int]], pad_id: int):
    """`prefill`, for a prompt pass: raises `PackingUnsupported` unless it gives plain keys / values."""
    kv, last_logits, attn = prefill(model, prompts, pad_id)
    if not isinstance(kv, list):
        raise lp.PackingUnsupported(f"a prompt pass needs a DynamicCache of plain layers, got {type(kv).__name__}")
    return kv, last_logits, attn


def plain_layers(cache) -> list[tuple[Tensor, Tensor]] | None:
    """Per layer (keys, values) of a transformers cache made of plain DynamicLayers, else None."""
    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer).__name__ != "DynamicLayer" for layer in layers):
        return None
    return [(layer.keys, layer.values) for layer in layers]


def packed_prompt_kv(model, prompts: list[list[int]], pad_id: int):
    """The prompts once, PACKED (no padding computed), with the LM head at each prompt's last token;
    their keys / values then gathered into the left-padded layout the sampler and
    `response_logps(prompt_pass=...)` read (prompt i in columns W - |x_i| .. W - 1).

    Grad flows as the caller has it (the gather is differentiable). Returns (per layer (keys,
    values) each (P, heads, W, head_dim), last logits (P, V), attention mask (P, W) long: 1 on real
    tokens), the same numbers a left-padded forward gives (to float rounding), at the cost of the
    real tokens only: TL;DR prompts (142-511 tokens) fill 65% of a left-padded block.
    Needs `logprobs.packing_unsupported_reason(model)` to be None.
    """
    device, P = lp._device(model), len(prompts)
    lengths = [len(p) for p in prompts]
    packed = lp._pack(prompts, [[] for _ in prompts], pad_id)
    R, T = packed.input_ids.shape
    start = [0] * P  # flat index (row * T + column) of each prompt's first token
    for row, groups in enumerate(lp._rows_of(lengths)):  # the rows _pack laid out
        offset = 0
        for g in groups:
            start[g], offset = row * T + offset, offset + lengths[g]
    start_t, len_t = torch.tensor(start), torch.tensor(lengths)
    W = max(lengths)
    col = torch.arange(W)
    attn = (col[None, :] >= W - len_t[:, None]).long()  # (P, W) left padding
    src = start_t[:, None] + (col[None, :] - (W - len_t[:, None])).clamp(min=0)  # (P, W); padding reads token 0
    last = start_t + len_t - 1  # (P,) flat position of each prompt's last token
    needs_head = torch.zeros(R * T, dtype=torch.bool)
    needs_head[last] = True
    inner = lp.unwrap_model(model)
    mask = lp.packed_attention_mask(packed.segment.to(device), inner.get_output_embeddings().weight.dtype, packed.group.to(device))
    inputs = dict(input_ids=packed.input_ids.to(device), attention_mask=mask,
                  position_ids=packed.position_ids.to(device), use_cache=True)
    needs_head = needs_head.view(R, T).to(device)
    if lp._head_selects_positions(inner):
        out = model(**inputs, logits_to_keep=needs_head)
        logits = out.logits  # (P, V) in row-major order of the last tokens
    else:
        base = lp._unwrap_peft(model)
        out = getattr(base, base.base_model_prefix)(**inputs)
        logits = base.get_output_embeddings()(out.last_hidden_state[needs_head])
    layers = plain_layers(cache_of(out))
    if layers is None:
        raise lp.PackingUnsupported("a prompt pass needs a DynamicCache of plain layers")
    src = src.view(-1).to(device)

    def left_padded(x: Tensor) -> Tensor:  # (R, H, T, D) -> (P, H, W, D)
        H, D = x.shape[1], x.shape[-1]
        return x.transpose(1, 2).reshape(R * T, H, D)[src].view(P, W, H, D).transpose(1, 2)

    kv = [(left_padded(keys), left_padded(values)) for keys, values in layers]
    rank = torch.argsort(torch.argsort(last)).to(device)  # prompt i's row in the row-major logits
    return kv, logits[rank], attn.to(device)


def forward_prompts(model, prompts: list[list[int]], pad_id: int):
    """The prompts once, left-padded to width W so that each ends at column W-1, with a KV cache and
    the LM head at the last position only (shared by `prompt_pass` and `rollout.sample`'s prefill).

    Returns (the model's cache, last logits (P, V), attention mask (P, W) long: 1 on real tokens),
    on the model's device. Position ids count from each prompt's first real token.
    """
    device, P, width = lp._device(model), len(prompts), max(len(p) for p in prompts)
    ids = torch.full((P, width), pad_id, dtype=torch.long)
    attn = torch.zeros((P, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        attn[i, width - len(p) :] = 1
    position_ids = (attn.cumsum(-1) - 1).clamp(min=0)
    attn = attn.to(device)
    kwargs = dict(input_ids=ids.to(device), attention_mask=attn, position_ids=position_ids.to(device), use_cache=True)
    if "logits_to_keep" in lp.forward_params(model):
        kwargs["logits_to_keep"] = 1
    out = model(**kwargs)
    return cache_of(out), out.logits[:, -1], attn


def cache_of(out):
    """The KV cache of a transformers forward's output (`cache` in newer versions, else `past_key_values`)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values
