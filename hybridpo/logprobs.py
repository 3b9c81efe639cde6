"""Token and sequence log-probs of responses: the only place that turns model outputs into log π(y|x).

Two layouts compute the same numbers (tested to 1e-5 in fp32, values and gradients):

- "padded", the plain reference: every (prompt, response) pair is its own right-padded row; one
  forward gives logits at every position, which are log-softmaxed in fp32 and gathered at the
  response tokens.
- "packed", the fast path (issue 7): each prompt appears ONCE in its row, followed by all of its
  responses (e.g. chosen, rejected and k online samples):

      row:  [ prompt_i | response_i1 | response_i2 | ... | prompt_j | ... | pad ]
      pos  :  0 .. Lp-1  | Lp .. Lp+n1-1 | Lp .. Lp+n2-1 | ...          (restart per response)

  A 4D additive attention mask lets each response token see the whole prompt and the earlier
  tokens of its OWN response (causal), never another response, so each response is scored exactly
  as if it followed the prompt alone. The LM head (hidden -> vocab, 50k wide for Pythia) is applied
  only at the positions whose next token is a response token: the last prompt position (shared by
  all responses of the prompt, so computed once) and every response position but the last.
  The hidden states are gathered at those positions before the head, by the model's own forward
  given a boolean `logits_to_keep` (transformers 5.x; DDP / peft wrappers and any logit scaling
  then apply as usual), or, where the forward lacks that, by running the decoder (`model.gpt_neox`,
  `model.model`, found through `base_model_prefix`, also under peft) and applying
  `get_output_embeddings()` to the gathered states. Models whose attention cannot take a custom
  4D mask raise `PackingUnsupported` (use layout="padded"); `packing_unsupported_reason` says why.
  On TL;DR (prompts ~334 tokens, responses ~35) a DPO pair costs one prompt pass instead of two,
  and the head runs on ~10% of the positions instead of all of them. Groups (a prompt and its
  responses) shorter than the widest share a row (first-fit decreasing, `_rows_of`), each with its
  own positions, and the mask keeps groups apart; so padding is what bin packing leaves, not the
  gap between each prompt and the longest one.

- "after a prompt pass" (issue 7, online methods): `prompt_cache.prompt_pass(model, prompts)` runs the prompts
  once and keeps their keys / values (with grad) and next-token logits; `response_logps(...,
  prompt_pass=pp)` then forwards only the responses, packed as above, attending to those cached keys
  through the same kind of 4D mask; and `rollout.sample(..., prompt_pass=pp)` seeds its KV cache from
  the same pass, detached. A step of HyPO / RLHF / online DPO thus runs each prompt through the
  policy once for both sampling and the loss (the weights do not change in between).
  `prompt_pass_unsupported_reason` says when that would change the numbers (active dropout: the
  sampler runs in eval mode; gradient checkpointing; a DDP wrapper, which expects one forward per
  backward); callers then fall back to the packed layout.

Conventions: `prompts: list[list[int]]` (P prompts, each non-empty); `responses:
list[list[list[int]]]` (for prompt i, its responses); results are in prompt-major order (N =
total responses). Padding is never inferred from token ids (pad may equal EOS): every mask is
built from the list lengths. Gradients flow whenever the caller has grad enabled.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:  # prompt_cache imports this module; the type is all logprobs needs of it
    from hybridpo.prompt_cache import PromptPass

LAYOUTS = ("packed", "padded")

# Attention implementations whose kernels take an arbitrary 4D additive mask from transformers'
# masking utilities unchanged (masking_utils._preprocess_mask_arguments returns a 4D mask as-is;
# eager adds it to the scores, sdpa passes it to F.scaled_dot_product_attention as attn_mask).
# flash_attention_* and flex_attention ignore or reject such a mask.
_PACKING_ATTENTION = ("eager", "sdpa")

# Config fields of architectures whose CausalLM head does more than `get_output_embeddings()`
# (Gemma-2 soft-capping, Cohere / Granite logit scaling): the packed path would skip it.
_HEAD_EXTRAS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


class PackingUnsupported(ValueError):
    """The model cannot take the packed layout; the message says why and to use layout="padded"."""


@dataclass
class ResponseLogps:
    """Log-probs of N responses (prompt-major order), fp32."""

    logps: Tensor  # (N,) sequence log-probs log π(y|x): sums of tok_logps over the mask
    tok_logps: Tensor  # (N, L) per-token log-probs, 0 where mask is False; L = longest response
    mask: Tensor  # (N, L) bool, True on the response's real tokens
    lengths: Tensor  # (N,) long, number of tokens of each response
    counts: list[int]  # responses per prompt, so logps can be split back by prompt

    def by_prompt(self) -> Tensor:
        """logps as (P, k) when every prompt has the same number k of responses."""
        if len(set(self.counts)) != 1:
            raise ValueError(f"by_prompt needs equal response counts per prompt, got {self.counts}")
        return self.logps.view(len(self.counts), self.counts[0])


def response_logps(
    model,
    prompts: list[list[int]],
    responses: list[list[list[int]]],
    *,
    pad_id: int,
    temperature: float = 1.0,
    layout: str = "packed",
    prompt_pass: PromptPass | None = None,
) -> ResponseLogps:
    """log π_τ(y|x) for every response y of every prompt x, π_τ = softmax(logits / τ), in fp32.

    `temperature` τ must equal the sampler's so log-probs of samples are those of the
    distribution that drew them (rollout.sample uses the same convention). Raises
    `PackingUnsupported` for layout="packed" on a model that cannot take a custom 4D mask.
    With `prompt_pass` (from `prompt_cache.prompt_pass(model, prompts)`, same model, same prompts) only the
    responses are forwarded; `layout` is then not used.
    """
    _check_inputs(prompts, responses, temperature)
    if prompt_pass is not None:
        if prompt_pass.prompts is not prompts and prompt_pass.prompts != prompts:
            raise ValueError("prompt_pass was run on other prompts than the ones given")
        tok_logps = _after_prompt_tok_logps(model, prompt_pass, responses, pad_id, temperature)
    elif layout == "packed":
        tok_logps = _packed_tok_logps(model, prompts, responses, pad_id, temperature)
    elif layout == "padded":
        tok_logps = _padded_tok_logps(model, prompts, responses, pad_id, temperature)
    else:
        raise ValueError(f"layout={layout!r}; choose from {list(LAYOUTS)}")
    return _assemble(tok_logps, responses)


def packing_unsupported_reason(model) -> str | None:
    """Why `model` cannot use layout="packed", or None when it can."""
    inner = unwrap_model(model)
    peft_cfg = getattr(model, "peft_config", None)
    active = getattr(model, "active_adapter", None)
    if isinstance(peft_cfg, dict) and isinstance(active, str) and active in peft_cfg:
        if getattr(peft_cfg[active], "is_prompt_learning", False):
            return "peft prompt-learning adapters add virtual tokens in PeftModel.forward"
    config = getattr(inner, "config", None)
    if config is None or not hasattr(inner, "get_output_embeddings"):
        return f"{type(inner).__name__} is not a transformers causal LM"
    attn = getattr(config, "_attn_implementation", None) or "eager"
    if attn not in _PACKING_ATTENTION:
        return f"attention implementation {attn!r} does not take a custom 4D mask"
    if "sliding_attention" in (getattr(config, "layer_types", None) or ()):
        return "sliding-window layers build their own masks"
    if _head_selects_positions(inner):
        return None
    # the fallback path calls the decoder and the head directly, outside any wrapper's forward
    if inner is not _unwrap_peft(model):
        return f"{type(model).__name__}'s forward would be bypassed (needs logits_to_keep masks)"
    for name in _HEAD_EXTRAS:
        if getattr(config, name, None) not in (None, 1.0):
            return f"config.{name} transforms logits beyond the output embedding"
    if getattr(inner, getattr(inner, "base_model_prefix", ""), None) is None:
        return f"{type(inner).__name__} has no `{inner.base_model_prefix}` decoder attribute"
    return None


# ---------------------------------------------------------------------------------------------
# padded: the reference


def _padded_tok_logps(model, prompts, responses, pad_id, temperature) -> list[Tensor]:
    pairs = [(p, r) for p, rs in zip(prompts, responses) for r in rs]
    device = _device(model)
    width = max(len(p) + len(r) for p, r in pairs)
    ids = torch.full((len(pairs), width), pad_id, dtype=torch.long)  # (N, T) right-padded
    attn = torch.zeros((len(pairs), width), dtype=torch.long)
    for row, (p, r) in enumerate(pairs):
        ids[row, : len(p) + len(r)] = torch.tensor(p + r, dtype=torch.long)
        attn[row, : len(p) + len(r)] = 1
    logits = model(input_ids=ids.to(device), attention_mask=attn.to(device)).logits  # (N, T, V)
    logps = scaled_logits(logits, temperature).log_softmax(-1)
    # the token at position s is predicted by the logits at s - 1
    next_logps = logps[:, :-1].gather(-1, ids[:, 1:, None].to(device)).squeeze(-1)  # (N, T-1)
    return [next_logps[row, len(p) - 1 : len(p) - 1 + len(r)] for row, (p, r) in enumerate(pairs)]


# ---------------------------------------------------------------------------------------------
# packed: one row per prompt, each response sees only the prompt and itself


@dataclass
class _Packed:
    input_ids: Tensor  # (R, T) groups (a prompt then its responses) back to back, right-padded with pad_id
    position_ids: Tensor  # (R, T) 0..Lp-1 on a prompt, restarting at Lp for each of its responses
    segment: Tensor  # (R, T) 0 on a prompt, j+1 on its response j, -1 on padding
    group: Tensor  # (R, T) index of the prompt whose group the position belongs to, -1 on padding
    needs_head: Tensor  # (R, T) bool, True at the U positions whose next token is a response token
    target_head: Tensor  # (M,) for each response token (prompt-major), its index into the U
    target_ids: Tensor  # (M,) the response tokens themselves


def _rows_of(sizes: list[int]) -> list[list[int]]:
    """Groups (prompt + its responses, `sizes` tokens each) assigned to rows no wider than the widest
    group, first-fit in decreasing size: short groups share a row instead of padding it out. On
    TL;DR batches (prompts 142-511 tokens) one group per row would leave ~30% of the positions padding.
    Returns, per row, its groups' indices in row order."""
    width = max(sizes)
    rows: list[list[int]] = []
    free: list[int] = []
    for g in sorted(range(len(sizes)), key=lambda g: -sizes[g]):
        r = next((r for r, room in enumerate(free) if room >= sizes[g]), None)
        if r is None:
            rows.append([]), free.append(width)
            r = len(rows) - 1
        rows[r].append(g)
        free[r] -= sizes[g]
    return rows


def _pack(prompts, responses, pad_id) -> _Packed:
    """Lay out rows and index tensors; per-response Python, per-token work in torch ops."""
    sizes = [len(p) + sum(len(r) for r in rs) for p, rs in zip(prompts, responses)]
    rows, width = _rows_of(sizes), max(sizes)
    R = len(rows)
    input_ids = torch.full((R, width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((R, width), dtype=torch.long)
    segment = torch.full((R, width), -1, dtype=torch.long)
    group = torch.full((R, width), -1, dtype=torch.long)
    needs_head = torch.zeros((R, width), dtype=torch.bool)  # next token is a response token
    predictor: list = [None] * sum(len(rs) for rs in responses)  # per response (prompt-major): flat predicting columns
    first_response = [0]
    for rs in responses:
        first_response.append(first_response[-1] + len(rs))
    for row, groups in enumerate(rows):
        offset = 0
        for g in groups:
            p, rs = prompts[g], responses[g]
            lp = len(p)
            input_ids[row, offset : offset + lp] = torch.tensor(p, dtype=torch.long)
            position_ids[row, offset : offset + lp] = torch.arange(lp)
            segment[row, offset : offset + lp] = 0
            group[row, offset : offset + sizes[g]] = g
            start = offset + lp
            for j, r in enumerate(rs):
                n = len(r)
                if n:
                    input_ids[row, start : start + n] = torch.tensor(r, dtype=torch.long)
                    position_ids[row, start : start + n] = torch.arange(lp, lp + n)
                    segment[row, start : start + n] = j + 1
                    # token 0 is predicted at the last prompt position, token t > 0 at start + t - 1
                    cols = torch.cat([torch.tensor([offset + lp - 1]), torch.arange(start, start + n - 1)])
                    needs_head[row, cols] = True
                    predictor[first_response[g] + j] = row * width + cols
                start += n
            offset += sizes[g]
    # each needed position is computed once; several responses share the last prompt position
    head_index = needs_head.view(-1).cumsum(0) - 1  # (R*T,) index into the U head positions
    used = [c for c in predictor if c is not None]
    flat_pred = torch.cat(used) if used else torch.zeros(0, dtype=torch.long)
    flat_ids = [t for rs in responses for r in rs for t in r]
    return _Packed(
        input_ids=input_ids,
        position_ids=position_ids,
        segment=segment,
        group=group,
        needs_head=needs_head,
        target_head=head_index[flat_pred],
        target_ids=torch.tensor(flat_ids, dtype=torch.long),
    )


def packed_attention_mask(segment: Tensor, dtype: torch.dtype, group: Tensor | None = None,
                          position_ids: Tensor | None = None, window: int | None = None) -> Tensor:
    """Additive mask (R, 1, T, T): 0 where query q may attend key k, the dtype's minimum elsewhere.

    q sees k iff k <= q, both are in the same group (prompt + its responses; `group` None = one
    group per row) and k is on the prompt or in q's own response; with a sliding `window` (see
    `sliding_window`), also only if pos(q) - pos(k) < window, pos the (R, T) `position_ids` (the
    distance in q's own prompt + response). Padding queries see only themselves (their rows are
    never read; a non-empty row keeps softmax finite).
    """
    T = segment.shape[-1]
    q_seg, k_seg = segment[:, :, None], segment[:, None, :]  # (R, T, 1), (R, 1, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=segment.device).tril()
    allowed = causal & (q_seg >= 0) & (k_seg >= 0) & ((k_seg == 0) | (k_seg == q_seg))
    if group is not None:
        allowed &= group[:, :, None] == group[:, None, :]
    if window is not None:
        allowed &= position_ids[:, :, None] - position_ids[:, None, :] < window
    allowed |= torch.eye(T, dtype=torch.bool, device=segment.device)
    zero = torch.zeros((), dtype=dtype, device=segment.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)[:, None]  # (R, 1, T, T)


def _packed_tok_logps(model, prompts, responses, pad_id, temperature) -> list[Tensor]:
    reason = packing_unsupported_reason(model)
    if reason is not None:
        raise PackingUnsupported(f"layout='packed' is not available: {reason}; pass layout='padded'")
    device = _device(model)
    packed = _pack(prompts, responses, pad_id)
    inner = unwrap_model(model)
    mask = packed_attention_mask(packed.segment.to(device), inner.get_output_embeddings().weight.dtype,
                                 packed.group.to(device), packed.position_ids.to(device), sliding_window(inner.config))
    inputs = dict(
        input_ids=packed.input_ids.to(device),
        attention_mask=mask,
        position_ids=packed.position_ids.to(device),
        use_cache=False,
    )
    needs_head = packed.needs_head.to(device)
    if _head_selects_positions(inner):
        # through the model's own forward (so DDP / peft wrappers and any logit scaling apply): it
        # gathers the hidden states at `needs_head` (row-major) before its LM head
        logits = model(**inputs, logits_to_keep=needs_head).logits  # (U, V)
        if logits.shape != (int(needs_head.sum()), inner.get_output_embeddings().weight.shape[0]):
            raise PackingUnsupported(
                f"{type(inner).__name__}.forward ignored a boolean logits_to_keep (logits "
                f"{tuple(logits.shape)}); pass layout='padded'"
            )
    else:
        inner = _unwrap_peft(model)
        decoder = getattr(inner, inner.base_model_prefix)
        hidden = decoder(**inputs).last_hidden_state  # (P, T, H)
        logits = inner.get_output_embeddings()(hidden[needs_head])  # (U, V)
    logits = scaled_logits(logits, temperature)
    log_norm = logits.logsumexp(-1)  # (U,)
    at = packed.target_head.to(device)
    tok = logits[at, packed.target_ids.to(device)] - log_norm[at]  # (M,) log-softmax at the targets
    return list(tok.split([len(r) for rs in responses for r in rs]))


# ---------------------------------------------------------------------------------------------
# after a prompt pass (hybridpo.prompt_cache): the prompts' keys / values are computed once and reused


def after_prompt_attention_mask(segment: Tensor, prompt_attn: Tensor, dtype: torch.dtype) -> Tensor:
    """Additive mask (P, 1, T, W + T) for responses laid out after a cached prompt of width W.

    segment (P, T): j+1 on response j, -1 on padding; prompt_attn (P, W): 1 on real prompt tokens.
    Query q sees every real prompt token and the earlier tokens of its own response; padding
    queries see only themselves (their rows are never read).
    """
    T = segment.shape[-1]
    q_seg, k_seg = segment[:, :, None], segment[:, None, :]  # (P, T, 1), (P, 1, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=segment.device).tril()
    own = (causal & (q_seg >= 0) & (k_seg == q_seg)) | torch.eye(T, dtype=torch.bool, device=segment.device)
    prompt = (prompt_attn[:, None, :] == 1) & (q_seg >= 0)  # (P, T, W)
    allowed = torch.cat([prompt, own], dim=-1)  # (P, T, W + T)
    zero = torch.zeros((), dtype=dtype, device=segment.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)[:, None]


def _after_prompt_tok_logps(model, pp: PromptPass, responses, pad_id, temperature) -> list[Tensor]:
    """Token log-probs of the responses, forwarding only them, after the cached prompt keys / values."""
    from transformers.cache_utils import DynamicCache

    device, (P, W) = _device(model), pp.attn.shape
    width = max(sum(len(r) for r in rs) for rs in responses)
    input_ids = torch.full((P, width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((P, width), dtype=torch.long)
    segment = torch.full((P, width), -1, dtype=torch.long)
    needs_head = torch.zeros((P, width), dtype=torch.bool)  # positions predicting a response's token t > 0
    predictor = []  # per response: index of the row of `logits` (below) predicting each of its tokens
    for i, (p, rs) in enumerate(zip(pp.prompts, responses)):
        start = 0
        for j, r in enumerate(rs):
            n = len(r)
            if n:
                input_ids[i, start : start + n] = torch.tensor(r, dtype=torch.long)
                position_ids[i, start : start + n] = torch.arange(len(p), len(p) + n)
                segment[i, start : start + n] = j + 1
                needs_head[i, start : start + n - 1] = True
                # token 0 is predicted by the prompt's last logits (row i), token t > 0 at start + t - 1
                predictor.append(torch.cat([torch.tensor([-1 - i]), i * width + torch.arange(start, start + n - 1)]))
            start += n
    inner = unwrap_model(model)
    mask = after_prompt_attention_mask(segment.to(device), pp.attn, inner.get_output_embeddings().weight.dtype)
    cache = DynamicCache(ddp_cache_data=pp.kv)  # a fresh cache per call: the forward appends to it
    inputs = dict(input_ids=input_ids.to(device), attention_mask=mask, position_ids=position_ids.to(device),
                  use_cache=True)
    inputs["cache" if "cache" in forward_params(model) else "past_key_values"] = cache
    needs_head = needs_head.to(device)
    if not needs_head.any():  # every response is one token long: the prompt's logits predict them all
        resp_logits = pp.last_logits.new_zeros((0, pp.last_logits.shape[-1]))
    elif _head_selects_positions(inner):
        resp_logits = model(**inputs, logits_to_keep=needs_head).logits  # (U, V)
    else:
        inner = _unwrap_peft(model)
        hidden = getattr(inner, inner.base_model_prefix)(**inputs).last_hidden_state  # (P, T, H)
        resp_logits = inner.get_output_embeddings()(hidden[needs_head])
    logits = scaled_logits(torch.cat([pp.last_logits, resp_logits]), temperature)  # (P + U, V)
    log_norm = logits.logsumexp(-1)
    head_index = needs_head.view(-1).cumsum(0).cpu() - 1 + P  # flat position -> row of `logits`
    flat = torch.cat(predictor)
    at = torch.where(flat < 0, -1 - flat, head_index[flat.clamp(min=0)]).to(device)
    target = torch.tensor([t for rs in responses for r in rs for t in r], dtype=torch.long, device=device)
    tok = logits[at, target] - log_norm[at]
    return list(tok.split([len(r) for rs in responses for r in rs]))


def sliding_window(config) -> int | None:
    """The sliding attention window every layer of a model applies (Mistral v0.1: 4096; key k is
    visible from query q iff q - k < window), or None for full attention. transformers builds it
    into its own masks, not into a custom 4D one, so the packed mask must carry it. Configs with
    `layer_types` name their sliding layers there (packing refuses those); `sliding_window` then
    only sizes them."""
    if getattr(config, "layer_types", None) is not None:
        return None
    return getattr(config, "sliding_window", None)


def _head_selects_positions(inner) -> bool:
    """Whether `inner.forward` takes a (P, T) boolean `logits_to_keep` and applies its LM head only
    there (transformers 5.x `slice_logits_to_keep`); otherwise the decoder + head fallback is used."""
    if "logits_to_keep" not in inspect.signature(inner.forward).parameters:
        return False
    return _slice_supports_masks()


@functools.cache
def _slice_supports_masks() -> bool:
    try:
        from transformers.modeling_utils import slice_logits_to_keep
    except ImportError:
        return False
    probe = slice_logits_to_keep(torch.zeros(1, 3, 1), torch.tensor([[True, False, True]]))
    return tuple(probe.shape) == (2, 1)


# ---------------------------------------------------------------------------------------------


def _assemble(tok_logps: list[Tensor], responses) -> ResponseLogps:
    lengths = torch.tensor([len(r) for rs in responses for r in rs], dtype=torch.long)
    N, L = len(tok_logps), int(lengths.max()) if len(lengths) else 0
    device = tok_logps[0].device if tok_logps else torch.device("cpu")
    mask = (torch.arange(L)[None, :] < lengths[:, None]).to(device)  # (N, L)
    flat = torch.cat(tok_logps) if tok_logps else torch.zeros(0)
    padded = torch.zeros((N, L), dtype=flat.dtype, device=device).masked_scatter(mask, flat)
    return ResponseLogps(
        logps=padded.sum(-1),
        tok_logps=padded,
        mask=mask,
        lengths=lengths.to(device),
        counts=[len(rs) for rs in responses],
    )


def _check_inputs(prompts, responses, temperature) -> None:
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but responses for {len(responses)}")
    if not prompts or not any(rs for rs in responses):
        raise ValueError("response_logps needs at least one prompt with a response")
    for i, p in enumerate(prompts):
        if not p:
            raise ValueError(f"prompt {i} is empty: its first response token has nothing to condition on")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def scaled_logits(logits: Tensor, temperature: float) -> Tensor:
    """fp32 logits / τ, the log-probs' and the sampler's; at τ = 1 no division (x / 1 == x
    exactly; saves a pass over a (U, 50k) tensor)."""
    logits = logits.float()
    return logits if temperature == 1.0 else logits / temperature


def forward_params(model) -> frozenset[str]:
    """Keyword names the transformers model under any DDP / peft wrapper takes (they pass through)."""
    return _signature_params(type(unwrap_model(model)))


@functools.cache
def _signature_params(cls) -> frozenset[str]:  # once per model class, not once per call
    return frozenset(inspect.signature(cls.forward).parameters)


def unwrap_model(model):
    """The transformers model under DDP-style (`.module`) and peft wrappers."""
    while not hasattr(model, "config") and hasattr(model, "module"):
        model = model.module
    return _unwrap_peft(model)


def _unwrap_peft(model):
    """The transformers model under a peft wrapper (LoRA layers stay injected), else the model."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _device(model) -> torch.device:
    return next(model.parameters()).device
