"""Token and sequence log-probs of responses: the only place that turns model outputs into log π(y|x).

Three layouts compute the same numbers (tested to 1e-5 in fp32, values and gradients; the index
math is hybridpo.forward.layout's):

- "padded", the plain reference: every (prompt, response) pair its own right-padded row; logits
  at every position, log-softmaxed in fp32 and gathered at the response tokens.
- "packed": each prompt ONCE in its row, followed by all of its responses (chosen, rejected, k
  online samples), a 4D mask keeping responses apart; the LM head runs only at positions whose
  next token is a response token (hybridpo.forward.hf.logits_at). On TL;DR (prompts ~334 tokens,
  responses ~35) a DPO pair costs one prompt pass instead of two, and the 50k-wide head runs on
  ~10% of the positions.
- after a prompt pass (`prompt_pass=`, hybridpo.forward.prompts): the prompts' keys / values were
  computed once this step (with grad); only the responses are forwarded, attending to them.

`attention` picks how the packed and after-a-prompt-pass forwards attend (hybridpo.fast.attention_for):
"spans" lays every group in ONE unpadded row and runs attention span by span
(hybridpo.fast.varlen_attention: no padding computed, no (T, T) mask, the scores each token needs);
"masked" is the rows and 4D mask above; "auto" takes "spans" where the rule says. `head` picks how
the scored positions become log-probs (hybridpo.fast.head_for): "fused" runs the LM head and the
target's log-softmax together a block of positions at a time (hybridpo.fast.fused_head: no (U, V)
log-softmax or its gradient held), "plain" the model's head then `log_softmax_at`. `mlp` ("fused":
hybridpo.fast.fused_mlp, a SwiGLU MLP keeping two of its four tensors for the backward) applies to
the packed and after-a-prompt-pass forwards; the padded reference always runs the model as it is.

Gradients flow whenever the caller has grad enabled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from hybridpo.fast import attention_for, block_scope, head_for
from hybridpo.forward import hf
from hybridpo.forward import layout as lay

if TYPE_CHECKING:  # the type only: prompts.py builds on this module, not the other way round
    from hybridpo.forward.prompts import PromptPass

LAYOUTS = ("packed", "padded")


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
    attention: str = "auto",
    head: str = "auto",
    mlp: str = "auto",
    elementwise: str = "auto",
    span_kernel: str = "auto",
    train_gemm: str = "auto",
) -> ResponseLogps:
    """log π_τ(y|x) for every response y of every prompt x, π_τ = softmax(logits / τ), in fp32.

    `temperature` τ must equal the sampler's so log-probs of samples are those of the
    distribution that drew them (hybridpo.rollout.sample uses the same convention). Raises
    `PackingUnsupported` for layout="packed" on a model that cannot take a custom 4D mask.
    With `prompt_pass` (hybridpo.forward.prompts.prompt_pass of the same model on the same
    prompts) only the responses are forwarded; `layout` is then not used. `attention`, `head`,
    `mlp`, `elementwise`, `span_kernel` and `train_gemm` choose speed tricks of hybridpo.fast (the same numbers; "auto" follows
    the measured rules there).
    """
    lay.check_inputs(prompts, responses)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if prompt_pass is not None and prompt_pass.prompts is not prompts and prompt_pass.prompts != prompts:
        raise ValueError("prompt_pass was run on other prompts than the ones given")
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}; choose from {list(LAYOUTS)}")
    if prompt_pass is not None:
        with block_scope(model, mlp, elementwise, span_kernel, train_gemm):
            tok = _after_prompt(model, prompt_pass, responses, pad_id, temperature, attention, head)
    elif layout == "packed":
        with block_scope(model, mlp, elementwise, span_kernel, train_gemm):
            tok = _packed(model, prompts, responses, pad_id, temperature, attention, head)
    else:
        tok = _padded(model, prompts, responses, pad_id, temperature)
    return _assemble(list(tok.split(lay.response_lengths(responses))), responses)


def scaled_logits(logits: Tensor, temperature: float) -> Tensor:
    """fp32 logits / τ, the log-probs' and the sampler's; at τ = 1 no division (x / 1 == x
    exactly; saves a pass over a (U, 50k) tensor)."""
    logits = logits.float()
    return logits if temperature == 1.0 else logits / temperature


def log_softmax_at(logits: Tensor, rows: Tensor, targets: Tensor, temperature: float) -> Tensor:
    """log softmax(logits / τ)[rows, targets]: (U, V) logits, (M,) rows and targets -> (M,).

    The normaliser is computed once per logit row, however many targets read it."""
    logits = scaled_logits(logits, temperature)
    log_norm = logits.logsumexp(-1)  # (U,)
    return logits[rows, targets] - log_norm[rows]


# ---------------------------------------------------------------------------------------------


def _padded(model, prompts, responses, pad_id, temperature) -> Tensor:
    device = hf.device_of(model)
    ids, attn, spans = lay.padded_rows(prompts, responses, pad_id)
    logits = model(input_ids=ids.to(device), attention_mask=attn.to(device)).logits  # (N, T, V)
    logps = scaled_logits(logits, temperature).log_softmax(-1)
    # the token at position s is predicted by the logits at s - 1
    next_logps = logps[:, :-1].gather(-1, ids[:, 1:, None].to(device)).squeeze(-1)  # (N, T-1)
    return torch.cat([next_logps[row, start : start + n] for row, (start, n) in enumerate(spans)])


def _scored(model, inputs: dict, needs_head: Tensor, rows: Tensor, targets: Tensor, temperature: float,
            head: str) -> Tensor:
    """(M,) log π_τ of `targets` predicted at the U True positions of `needs_head` (`rows` index them):
    through the fused head (hybridpo.fast.fused_head) or the model's own head + `log_softmax_at`."""
    if head_for(model, head) == "fused":
        from hybridpo.fast import fused_head

        hidden, _ = fused_head.hidden_at(model, inputs, needs_head)  # (U, d)
        return fused_head.target_logps(hidden, fused_head.head_of(model), rows, targets, temperature)
    logits, _ = hf.logits_at(model, inputs, needs_head)  # (U, V)
    return log_softmax_at(logits, rows, targets, temperature)


def _packed(model, prompts, responses, pad_id, temperature, attention="auto", head="auto") -> Tensor:
    reason = hf.packing_unsupported_reason(model)
    if reason is not None:
        raise hf.PackingUnsupported(f"layout='packed' is not available: {reason}; pass layout='padded'")
    if attention_for(model, attention) == "spans":
        return _packed_spans(model, prompts, responses, temperature, head)
    device = hf.device_of(model)
    packed = lay.pack(prompts, responses, pad_id)
    window = hf.sliding_window(hf.unwrap_model(model).config)
    mask = lay.packed_attention_mask(packed.segment.to(device), hf.head_dtype(model), packed.group.to(device),
                                     packed.position_ids.to(device), window)
    inputs = dict(input_ids=packed.input_ids.to(device), attention_mask=mask,
                  position_ids=packed.position_ids.to(device), use_cache=False)
    return _scored(model, inputs, packed.needs_head.to(device), packed.target_head.to(device),
                   packed.target_ids.to(device), temperature, head)


def _packed_spans(model, prompts, responses, temperature, head) -> Tensor:
    """The packed layout as one unpadded row, attention span by span (hybridpo.fast.varlen_attention)."""
    from hybridpo.fast import varlen_attention as va

    device = hf.device_of(model)
    row = va.packed_row(prompts, responses)
    N = row.plan.queries
    inputs = dict(input_ids=row.input_ids.to(device), attention_mask=va.marker_mask(N, N, hf.head_dtype(model), device),
                  position_ids=row.position_ids.to(device), use_cache=False)
    with va.spans(model, row.plan):
        return _scored(model, inputs, row.needs_head.to(device), row.target_head.to(device),
                       row.target_ids.to(device), temperature, head)


def _after_prompt(model, pp: PromptPass, responses, pad_id, temperature, attention="auto", head="auto") -> Tensor:
    """Token log-probs of the responses, forwarding only them, after the cached prompt keys / values."""
    if pp.flat_kv is not None and attention_for(model, attention) == "spans":
        return _after_prompt_spans(model, pp, responses, temperature, head)
    device = hf.device_of(model)
    rows = lay.after_prompt_rows(pp.prompts, responses, pad_id)
    mask = lay.after_prompt_attention_mask(rows.segment.to(device), pp.attn, hf.head_dtype(model))
    inputs = dict(input_ids=rows.input_ids.to(device), attention_mask=mask,
                  position_ids=rows.position_ids.to(device), use_cache=True)
    inputs[hf.cache_keyword(model)] = hf.dynamic_cache(pp.kv)  # a fresh cache per call: the forward appends to it
    return _after_prompt_scored(model, pp, inputs, rows.needs_head.to(device), rows.target_rows.to(device),
                                rows.target_ids.to(device), temperature, head)


def _after_prompt_scored(model, pp: PromptPass, inputs, needs_head, target_rows, target_ids, temperature, head):
    """Log-probs of response tokens whose row (`target_rows`) is < P: prompt i's last logits from the
    pass; else P + the index of the predicting position among needs_head's U."""
    P = pp.last_logits.shape[0]
    from_prompt = target_rows < P
    first = log_softmax_at(pp.last_logits, target_rows[from_prompt], target_ids[from_prompt], temperature)
    parts = [(from_prompt, first)]
    if needs_head.any():  # else every response is one token long: the prompt's logits predict them all
        later = ~from_prompt
        parts.append((later, _scored(model, inputs, needs_head, target_rows[later] - P, target_ids[later], temperature, head)))
    dtype = torch.promote_types(parts[0][1].dtype, parts[-1][1].dtype)  # fp32 (float64 for a float64 model)
    tok = torch.empty(target_ids.shape, dtype=dtype, device=target_ids.device)
    for where, part in parts:
        tok[where] = part
    return tok


def _after_prompt_spans(model, pp: PromptPass, responses, temperature, head) -> Tensor:
    """The responses of every prompt in one unpadded row after the flat prompt pass, attention span by
    span: each response sees its own prompt's cached keys and its own earlier tokens."""
    from hybridpo.fast import varlen_attention as va

    device = hf.device_of(model)
    cached = pp.flat_kv[0][0].shape[2]
    row = va.after_prompt_row([len(p) for p in pp.prompts], pp.flat_start, cached, responses)
    inputs = dict(input_ids=row.input_ids.to(device), position_ids=row.position_ids.to(device), use_cache=True,
                  attention_mask=va.marker_mask(row.plan.queries, row.plan.keys, hf.head_dtype(model), device))
    inputs[hf.cache_keyword(model)] = hf.dynamic_cache(pp.flat_kv)  # a fresh cache per call: the forward appends to it
    with va.spans(model, row.plan):
        return _after_prompt_scored(model, pp, inputs, row.needs_head.to(device), row.target_rows.to(device),
                                    row.target_ids.to(device), temperature, head)


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
