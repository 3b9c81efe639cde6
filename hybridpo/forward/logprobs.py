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

Gradients flow whenever the caller has grad enabled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

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
) -> ResponseLogps:
    """log π_τ(y|x) for every response y of every prompt x, π_τ = softmax(logits / τ), in fp32.

    `temperature` τ must equal the sampler's so log-probs of samples are those of the
    distribution that drew them (hybridpo.rollout.sample uses the same convention). Raises
    `PackingUnsupported` for layout="packed" on a model that cannot take a custom 4D mask.
    With `prompt_pass` (hybridpo.forward.prompts.prompt_pass of the same model on the same
    prompts) only the responses are forwarded; `layout` is then not used.
    """
    lay.check_inputs(prompts, responses)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if prompt_pass is not None:
        if prompt_pass.prompts is not prompts and prompt_pass.prompts != prompts:
            raise ValueError("prompt_pass was run on other prompts than the ones given")
        tok = _after_prompt(model, prompt_pass, responses, pad_id, temperature)
    elif layout == "packed":
        tok = _packed(model, prompts, responses, pad_id, temperature)
    elif layout == "padded":
        tok = _padded(model, prompts, responses, pad_id, temperature)
    else:
        raise ValueError(f"layout={layout!r}; choose from {list(LAYOUTS)}")
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


def _packed(model, prompts, responses, pad_id, temperature) -> Tensor:
    reason = hf.packing_unsupported_reason(model)
    if reason is not None:
        raise hf.PackingUnsupported(f"layout='packed' is not available: {reason}; pass layout='padded'")
    device = hf.device_of(model)
    packed = lay.pack(prompts, responses, pad_id)
    window = hf.sliding_window(hf.unwrap_model(model).config)
    mask = lay.packed_attention_mask(packed.segment.to(device), hf.head_dtype(model), packed.group.to(device),
                                     packed.position_ids.to(device), window)
    inputs = dict(input_ids=packed.input_ids.to(device), attention_mask=mask,
                  position_ids=packed.position_ids.to(device), use_cache=False)
    logits, _ = hf.logits_at(model, inputs, packed.needs_head.to(device))  # (U, V)
    return log_softmax_at(logits, packed.target_head.to(device), packed.target_ids.to(device), temperature)


def _after_prompt(model, pp: PromptPass, responses, pad_id, temperature) -> Tensor:
    """Token log-probs of the responses, forwarding only them, after the cached prompt keys / values."""
    device = hf.device_of(model)
    rows = lay.after_prompt_rows(pp.prompts, responses, pad_id)
    mask = lay.after_prompt_attention_mask(rows.segment.to(device), pp.attn, hf.head_dtype(model))
    inputs = dict(input_ids=rows.input_ids.to(device), attention_mask=mask,
                  position_ids=rows.position_ids.to(device), use_cache=True)
    inputs[hf.cache_keyword(model)] = hf.dynamic_cache(pp.kv)  # a fresh cache per call: the forward appends to it
    needs_head = rows.needs_head.to(device)
    if needs_head.any():
        resp_logits, _ = hf.logits_at(model, inputs, needs_head)  # (U, V)
    else:  # every response is one token long: the prompt's logits predict them all
        resp_logits = pp.last_logits.new_zeros((0, pp.last_logits.shape[-1]))
    logits = torch.cat([pp.last_logits, resp_logits])  # (P + U, V)
    return log_softmax_at(logits, rows.target_rows.to(device), rows.target_ids.to(device), temperature)


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
