"""The prompts' forward, once per step: keys / values and next-token logits kept for what follows.

A step of HyPO / RLHF / online DPO can run each prompt through the policy ONCE:
`prompt_pass(model, prompts)` keeps the prompts' keys / values (with grad) and their last logits;
`response_logps(..., prompt_pass=pp)` then forwards only the responses, attending to those keys
through a 4D mask, and `hybridpo.rollout.sample(..., prompt_pass=pp)` seeds its decode cache from
the same pass, detached (the weights do not change in between). The sampler's own prefill, when
there is no pass to share, is `prefill` too.

Layout: where attention can run span by span (hybridpo.fast.attention_for: "spans"), the prompts
lie back to back in ONE unpadded row, each attending causally to itself
(hybridpo.fast.varlen_attention); that flat pass is kept too (`flat_kv`), and the responses are then
forwarded as one unpadded row attending to it. Otherwise the forward is PACKED where prompts can
share rows (first-fit, hybridpo.forward.layout; no position is computed for padding). Either way
the keys / values are gathered, differentiably, into the left-padded (P, heads, W, head_dim)
layout the sampler (and the masked after-prompt layout) reads: prompt i in columns W - |x_i| .. W - 1,
`attn` (P, W) 1 on real tokens. Where packing would not save positions, one left-padded forward.
`prompt_pass_unsupported_reason` says when sharing would change the numbers (active dropout: the
sampler runs in eval mode; gradient checkpointing; a DDP wrapper; a model that cannot pack).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from hybridpo.fast import attention_for, block_scope
from hybridpo.forward import hf
from hybridpo.forward import layout as lay


@dataclass
class PromptPass:
    """One forward of P prompts, left-padded to width W, kept for the rest of the step."""

    prompts: list[list[int]]  # the prompts it ran, as given
    kv: list[tuple[Tensor, Tensor]]  # per layer (keys, values), each (P, kv_heads, W, head_dim); with grad when enabled
    last_logits: Tensor  # (P, V) logits at each prompt's last token (predicting the first response token)
    attn: Tensor  # (P, W) long, 1 on real prompt tokens (left padding is 0)
    flat_kv: list[tuple[Tensor, Tensor]] | None = None  # per layer (keys, values) (1, kv_heads, sum |x_i|, head_dim) of the one-row pass, with grad; None when not run so
    flat_start: list[int] | None = None  # (P,) first column of each prompt in that row


def prompt_pass_unsupported_reason(model) -> str | None:
    """Why `prompt_pass` + `response_logps(prompt_pass=...)` + `sample(prompt_pass=...)` would not
    give the numbers of separate passes for `model` now, or None when they would."""
    reason = hf.packing_unsupported_reason(model)
    if reason is not None:
        return reason
    inner = hf.unwrap_model(model)
    if hf.sliding_window(inner.config) is not None:
        return "sliding-window layers keep a truncated cache, not plain keys / values"
    if hasattr(model, "module") and not hasattr(model, "get_base_model"):
        return "a DDP-style wrapper expects one forward per backward"
    if model.training and _checkpointing(inner):
        return "gradient checkpointing turns the KV cache off in training mode"
    if model.training:
        if any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules()):
            return "active dropout: the sampler runs in eval mode and would see other keys / values"
        config = inner.config
        for name in ("attention_dropout", "hidden_dropout", "attn_pdrop", "resid_pdrop", "dropout"):
            if isinstance(getattr(config, name, None), float) and getattr(config, name) > 0:
                return f"config.{name} > 0: the sampler runs in eval mode and would see other keys / values"
    return None


def _checkpointing(inner) -> bool:
    """Gradient checkpointing on (transformers 5.x `is_activation_checkpointing`, else the older name)."""
    if hasattr(type(inner), "is_activation_checkpointing") or hasattr(inner, "is_activation_checkpointing"):
        return bool(inner.is_activation_checkpointing)
    return bool(getattr(inner, "is_gradient_checkpointing", False))


def prompt_pass(model, prompts: list[list[int]], *, pad_id: int, attention: str = "auto",
                mlp: str = "auto", elementwise: str = "auto", span_kernel: str = "auto",
                train_gemm: str = "auto") -> PromptPass:
    """Run the prompts once (grad as the caller has it) and keep their keys / values and last logits.

    The head runs at one position per prompt. Raises `PackingUnsupported` when
    `prompt_pass_unsupported_reason(model)` names a reason, or when the model's cache is not made
    of plain layers (e.g. sliding windows).
    """
    if not prompts or any(not p for p in prompts):
        raise ValueError("prompt_pass needs at least one prompt, and no empty prompt")
    reason = prompt_pass_unsupported_reason(model)
    if reason is not None:
        raise hf.PackingUnsupported(f"prompt_pass is not available: {reason}")
    if attention_for(model, attention) == "spans":
        with block_scope(model, mlp, elementwise, span_kernel, train_gemm):
            kv, last_logits, attn, flat_kv, starts = _spans_prefill(model, prompts)
        return PromptPass(prompts=prompts, kv=kv, last_logits=last_logits, attn=attn, flat_kv=flat_kv, flat_start=starts)
    with block_scope(model, mlp, elementwise, train_gemm=train_gemm):
        kv, last_logits, attn = prefill(model, prompts, pad_id, attention="masked")
    if not isinstance(kv, list):
        raise hf.PackingUnsupported(f"a prompt pass needs a DynamicCache of plain layers, got {type(kv).__name__}")
    return PromptPass(prompts=prompts, kv=kv, last_logits=last_logits, attn=attn)


PREFILLS = ("auto", "spans", "packed", "left_padded")


def prefill(model, prompts: list[list[int]], pad_id: int, how: str = "auto", attention: str = "masked"):
    """The prompts once: (per layer (keys, values) (P, kv_heads, W, head_dim) left-padded, or
    transformers' own cache where it is not made of plain layers; last logits (P, V); mask (P, W)
    long, 1 on real tokens). `how`="auto": one unpadded row with attention span by span where
    hybridpo.fast.attention_for(model, attention) says "spans" (`attention` "masked" by default:
    the sampler's own prefill is a no-grad forward of the prompts alone, whose packed rows are
    short); else packed rows where the model
    can pack and packing puts several prompts in a row (it then computes fewer positions); else one
    left-padded forward (the same numbers, no gather). "spans", "packed" (rows) and "left_padded"
    force one. Grad flows as the caller has it."""
    if how not in PREFILLS:
        raise ValueError(f"how={how!r}; choose from {list(PREFILLS)}")
    if how == "spans" or (how == "auto" and attention_for(model, attention) == "spans"):
        attention_for(model, "spans")  # says why not, for how="spans" on a model that cannot
        return _spans_prefill(model, prompts)[:3]
    lengths = [len(p) for p in prompts]
    can_pack = hf.packing_unsupported_reason(model) is None and hf.sliding_window(hf.unwrap_model(model).config) is None
    if how == "packed" or (how == "auto" and can_pack and len(lay.rows_of(lengths)) < len(prompts)):
        return _packed_prefill(model, prompts, pad_id)
    device = hf.device_of(model)
    ids, attn, position_ids = lay.left_padded(prompts, pad_id)
    attn = attn.to(device)
    logits, out = hf.last_logits(model, dict(input_ids=ids.to(device), attention_mask=attn,
                                             position_ids=position_ids.to(device), use_cache=True))
    cache = hf.cache_of(out)
    kv = hf.plain_layers(cache)
    return (cache if kv is None else kv), logits, attn


def _spans_prefill(model, prompts: list[list[int]]):
    """The prompts back to back in one unpadded row, each attending causally to itself
    (hybridpo.fast.varlen_attention), the LM head at each prompt's last token. Returns the
    left-padded keys / values (gathered, differentiably, as `_packed_prefill`), last logits (P, V),
    mask (P, W), and the row's own per-layer keys / values (1, kv_heads, sum |x_i|, head_dim) with
    each prompt's first column."""
    from hybridpo.fast import varlen_attention as va

    device, P = hf.device_of(model), len(prompts)
    lengths = [len(p) for p in prompts]
    row = va.packed_row(prompts, [[] for _ in prompts])
    N = row.plan.queries
    inputs = dict(input_ids=row.input_ids.to(device), position_ids=row.position_ids.to(device), use_cache=True,
                  attention_mask=va.marker_mask(N, N, hf.head_dtype(model), device))
    with va.spans(model, row.plan):
        logits, out = hf.logits_at(model, inputs, row.needs_head.to(device))  # (P, V): one head position per prompt, in order
    layers = hf.plain_layers(hf.cache_of(out))
    if layers is None:
        raise hf.PackingUnsupported("a prompt pass needs a DynamicCache of plain layers")
    attn, src = lay.left_padded_index(lengths, torch.tensor(row.prompt_start))  # (P, W) each
    W = attn.shape[1]
    src = src.view(-1).to(device)

    def left_padded(x: Tensor) -> Tensor:  # (1, H, N, D) -> (P, H, W, D)
        return x[0][:, src].view(x.shape[1], P, W, x.shape[-1]).transpose(0, 1)

    kv = [(left_padded(keys), left_padded(values)) for keys, values in layers]
    return kv, logits[row.prompt_last_head.to(device)], attn.to(device), list(layers), row.prompt_start


def _packed_prefill(model, prompts: list[list[int]], pad_id: int):
    """The prompts once, PACKED (no padding computed), with the LM head at each prompt's last token;
    their keys / values then gathered into the left-padded layout the sampler and
    `response_logps(prompt_pass=...)` read: the same numbers a left-padded forward gives (to float
    rounding), at the cost of the real tokens only (TL;DR prompts, 142-511 tokens, fill 65% of a
    left-padded block). The gather is differentiable."""
    device, P = hf.device_of(model), len(prompts)
    lengths = [len(p) for p in prompts]
    packed = lay.pack(prompts, [[] for _ in prompts], pad_id)
    R, T = packed.input_ids.shape
    attn, src = lay.left_padded_index(lengths, packed.prompt_start)  # (P, W) each
    W = attn.shape[1]
    last = packed.prompt_start + torch.tensor(lengths) - 1  # (P,) flat position of each prompt's last token
    needs_head = torch.zeros(R * T, dtype=torch.bool)
    needs_head[last] = True
    mask = lay.packed_attention_mask(packed.segment.to(device), hf.head_dtype(model), packed.group.to(device))
    inputs = dict(input_ids=packed.input_ids.to(device), attention_mask=mask,
                  position_ids=packed.position_ids.to(device), use_cache=True)
    logits, out = hf.logits_at(model, inputs, needs_head.view(R, T).to(device))  # (P, V) in row-major order
    layers = hf.plain_layers(hf.cache_of(out))
    if layers is None:
        raise hf.PackingUnsupported("a prompt pass needs a DynamicCache of plain layers")
    src = src.view(-1).to(device)

    def left_padded(x: Tensor) -> Tensor:  # (R, H, T, D) -> (P, H, W, D)
        H, D = x.shape[1], x.shape[-1]
        return x.transpose(1, 2).reshape(R * T, H, D)[src].view(P, W, H, D).transpose(1, 2)

    kv = [(left_padded(keys), left_padded(values)) for keys, values in layers]
    rank = torch.argsort(torch.argsort(last)).to(device)  # prompt i's row in the row-major logits
    return kv, logits[rank], attn.to(device)
