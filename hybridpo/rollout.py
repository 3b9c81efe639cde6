"""No-grad sampling of k completions per prompt with a KV cache; knows nothing of rewards.

The prompt is run once per prompt, not once per sample: the P prompts are prefilled in one
forward (`hybridpo.forward.prompts.prefill`: packed where prompts can share rows, their keys /
values then laid out left-padded), and the P*k samples decode together, one token per step, with
the model's own forward, the cache repeated k times along the batch, a sample that emits EOS
leaving the batch (its cache rows are dropped). Two speed tricks of hybridpo.fast are chosen by
`decoder=` and `kv_cache=` (each "auto" by a measured rule, each tested to draw the same tokens):
the lean decode step (GPT-NeoX, the Llama family) and a KV cache allocated once. The only Python
loop is over time steps. Prompts of different lengths are left-padded, with the attention mask
hiding the pads and position ids counting from each prompt's first real token, so a batch gives
the same tokens as one prompt at a time (tested against transformers' greedy `generate`).

Log-probs (the classic source of negative "KL" in other libraries is a mismatch here):
`Rollout.logps` is log π_τ(y|x) with π_τ = softmax(logits / τ), the same temperature and the same
response mask `logprobs.response_logps(..., temperature=τ)` uses, so the two agree to float
precision and KL estimates on samples of π = π_ref are exactly zero. top-k / top-p truncate the
distribution the tokens are DRAWN from, but `.logps` stays that of π_τ (the policy the losses
train); with truncation the samples are then not exactly from π_τ, and `.sampler_logps` gives the
log-probs under the truncated sampler itself (for importance weights). With top_k=0, top_p=1 the
two are equal. temperature=0 means greedy decoding; `.logps` are then those of π_1, because the
τ -> 0 limit is a point mass whose log-prob is 0 for every greedy sequence.

Stopping: a sample ends at its first EOS (kept, counted in its length and log-prob) or at a stop
string. Stop strings are matched on the decoded text of the generated tokens once decoding ends;
the response keeps every token up to and including the one that completes the first stop string
(so its text contains the stop string, plus any characters that token carries beyond it); the
tokens after it are dropped from `.responses`, masked out of `.mask` and not counted in `.logps`.
A sample that never stops within `max_new_tokens` has `finished=False`; a fixed score for such
samples (the TL;DR practice) is the reward side's job.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from hybridpo.fast import DECODE_GEMMS, decoder_for, kv_cache_for
from hybridpo.forward import hf
from hybridpo.forward.logprobs import scaled_logits
from hybridpo.forward.prompts import PromptPass, prefill


@dataclass
class Rollout:
    """k samples for each of P prompts; tensors are (P, k, ...) in the prompt's sample order."""

    responses: list[list[list[int]]]  # [prompt][sample] token ids, ending at and including EOS if emitted
    finished: Tensor  # (P, k) bool: stopped by EOS or a stop string within max_new_tokens
    eos: Tensor  # (P, k) bool: stopped by EOS (False for stop strings and unfinished samples)
    logps: Tensor  # (P, k) fp32 log π_τ(y|x), no grad: the sum of tok_logps over the mask
    sampler_logps: Tensor  # (P, k) fp32 log-prob under the top-k/top-p truncated sampler
    tok_logps: Tensor  # (P, k, T) fp32 per-token log π_τ, 0 off the mask; T = steps decoded
    tokens: Tensor  # (P, k, T) long, pad_id off the mask
    mask: Tensor  # (P, k, T) bool, True on each response's tokens
    lengths: Tensor  # (P, k) long, tokens per response


@torch.no_grad()
def sample(
    model,
    prompts: list[list[int]],
    k: int,
    *,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    top_k: int = 0,
    stop_strings: list[str] | None = None,
    tokenizer=None,
    generator: torch.Generator | None = None,
    prompt_pass: PromptPass | None = None,
    decoder: str = "auto",
    kv_cache: str = "auto",
    decode_gemm: str = "auto",
    uniforms: Tensor | None = None,
) -> Rollout:
    """Draw k completions for each prompt from `model` (a transformers causal LM, peft or not).

    The model is put in eval mode while sampling (no dropout: samples come from π itself; and
    gradient checkpointing, active only in training mode, would turn the KV cache off), then
    restored to its previous mode. With `prompt_pass` (hybridpo.forward.prompts.prompt_pass of the same
    model on the same prompts, this step) its keys / values and last logits, detached, replace
    the prefill: the prompts are not run again.

    `decoder`: "neox" decodes with hybridpo.fast.neox_decode (GPT-NeoX only: fewer ops, each
    prompt's cache read once for its k samples), "llama" with hybridpo.fast.llama_decode (Llama,
    Qwen2, Mistral without a sliding window), "lean" with whichever of the two fits the model,
    "transformers" with the model's own forward, "auto" by hybridpo.fast.decoder_for's rule (the
    lean step only for fp32 weights on CPU outside autocast). `kv_cache`: "preallocated" (hybridpo.fast.kv_cache),
    "dynamic" (transformers' own), "auto" by hybridpo.fast.kv_cache_for's rule. Every choice draws
    the same tokens from the same generator (up to float rounding of the logits).
    `decode_gemm`: the lean step's products, "panels" (hybridpo.fast.panel_linear; for the Llama
    family the block's norms, attention and SwiGLU fused around them), "library"
    (MKL), "auto" by hybridpo.fast.decode_gemm_for's rule; the same numbers to float rounding.

    `uniforms` (P*k, max_new_tokens) in [0, 1), e.g. hybridpo.sampling.row_uniforms of per-example
    seeds: token t of row n (sample j of prompt i is row i*k + j) is drawn at uniforms[n, t]
    instead of from `generator`, so a prompt's samples do not depend on the other prompts.
    """
    _check_args(prompts, k, max_new_tokens, temperature, top_p, top_k, stop_strings, tokenizer)
    lean = decoder_for(hf.unwrap_model(model), decoder)  # "neox", "llama" or "transformers"
    kv_cache_for(kv_cache, plain_layers=True)  # checks the settings before any work
    if decode_gemm not in DECODE_GEMMS:
        raise ValueError(f"decode_gemm={decode_gemm!r}; choose from {list(DECODE_GEMMS)}")
    if prompt_pass is not None and prompt_pass.prompts is not prompts and prompt_pass.prompts != prompts:
        raise ValueError("prompt_pass was run on other prompts than the ones given")
    was_training = model.training
    model.eval()
    draw_args = (temperature, top_k, top_p, generator)
    if uniforms is not None and tuple(uniforms.shape) != (len(prompts) * k, max_new_tokens):
        raise ValueError(f"uniforms must be (P*k, max_new_tokens) = {(len(prompts) * k, max_new_tokens)}, "
                         f"got {tuple(uniforms.shape)}")

    def draw(logits, rows, t):  # rows: the original rows of the logits (None: all, in order)
        u = None if uniforms is None else (uniforms[:, t] if rows is None else uniforms[rows, t])[:, None]
        return _draw(logits, *draw_args, u=u)

    try:
        kv, logits, prompt_attn = _prompt_state(model, prompts, pad_id, prompt_pass)
        if lean != "transformers" and isinstance(kv, list):
            from hybridpo.fast import lean_decode

            tokens, tok_logps, samp_logps, alive, done = lean_decode(
                lean, hf.unwrap_model(model), kv, prompt_attn, logits, k, max_new_tokens, eos_id, pad_id, draw,
                gemm=decode_gemm,
            )
        else:
            preallocate = kv_cache_for(kv_cache, plain_layers=isinstance(kv, list)) == "preallocated"
            cache, logits, attn, next_pos = _decode_start(kv, logits, prompt_attn, k, max_new_tokens, preallocate)
            tokens, tok_logps, samp_logps, alive, done = _decode(
                model, cache, logits, attn, next_pos, max_new_tokens, eos_id, pad_id, draw,
            )
    finally:
        model.train(was_training)
    return assemble(tokens, tok_logps, samp_logps, alive, done, len(prompts), k, eos_id=eos_id, pad_id=pad_id,
                    stop_strings=stop_strings, tokenizer=tokenizer)


def assemble(tokens: Tensor, tok_logps: Tensor, samp_logps: Tensor, alive: Tensor, done: Tensor, P: int, k: int, *,
             eos_id: int, pad_id: int, stop_strings=None, tokenizer=None) -> Rollout:
    """A decode loop's (N = P*k, steps) outputs -> Rollout: the stop-string cut (see the module
    docstring), everything after a sample's end masked to pad / 0, and the per-sample sums.
    Every sampler (this module's, hybridpo.sampling's) ends its samples by this one rule."""
    device, steps = tokens.device, tokens.shape[1]
    mask, finished = alive, done.clone()
    if stop_strings:
        cut = stop_string_lengths(tokens, mask, stop_strings, tokenizer)  # (N,) or -1
        hit = cut >= 0
        keep = torch.arange(steps, device=device)[None, :] < cut[:, None]
        mask = torch.where(hit[:, None], mask & keep, mask)
        finished |= hit
    tokens = tokens.masked_fill(~mask, pad_id)
    tok_logps, samp_logps = tok_logps * mask, samp_logps * mask
    lengths = mask.sum(-1)
    eos = (mask & (tokens == eos_id)).any(-1)  # EOS survived any stop-string cut
    flat = [row[: int(n)] for row, n in zip(tokens.tolist(), lengths.tolist())]
    return Rollout(
        responses=[flat[i * k : (i + 1) * k] for i in range(P)],
        finished=finished.view(P, k),
        eos=eos.view(P, k),
        logps=tok_logps.sum(-1).view(P, k),
        sampler_logps=samp_logps.sum(-1).view(P, k),
        tok_logps=tok_logps.view(P, k, steps),
        tokens=tokens.view(P, k, steps),
        mask=mask.view(P, k, steps),
        lengths=lengths.view(P, k),
    )


def _prompt_state(model, prompts, pad_id, pp: PromptPass | None):
    """The prompts' keys / values and next-token logits, from the prompt pass when given (detached),
    else from one prefill (`forward.prompts.prefill`: packed where that computes fewer positions).

    Returns (per layer (keys, values) (P, H, W, D) left-padded, or transformers' own cache when it
    is not made of plain layers; last logits (P, V); prompt mask (P, W) long, 1 on real tokens).
    """
    if pp is not None:
        return [(keys.detach(), values.detach()) for keys, values in pp.kv], pp.last_logits.detach(), pp.attn
    return prefill(model, prompts, pad_id)


def _decode_start(kv, last_logits, prompt_attn, k, max_new_tokens, preallocate: bool):
    """transformers' decode loop's starting state from the prompts' state, each prompt repeated k times.

    Returns the cache (P*k rows: sample j of prompt i is row i*k + j), the next-token logits
    (P*k, V), the attention mask (P*k, W + max_new_tokens) whose generated columns are all real
    tokens, and each row's next position (P*k,).
    """
    P, width = prompt_attn.shape
    if preallocate:
        from hybridpo.fast.kv_cache import preallocated_cache

        cache = preallocated_cache(kv, k, width + max_new_tokens)
    else:  # transformers' own cache: it grows by concatenation
        cache = hf.dynamic_cache(kv) if isinstance(kv, list) else kv
        cache.batch_repeat_interleave(k)
    attn = torch.cat([prompt_attn, prompt_attn.new_ones((P, max_new_tokens))], dim=1).repeat_interleave(k, dim=0)
    return cache, last_logits.repeat_interleave(k, dim=0), attn, prompt_attn.sum(-1).repeat_interleave(k)


def _decode(model, cache, logits, attn, next_pos, max_new_tokens, eos_id, pad_id, draw):
    """The decode loop over time steps: one token for every unfinished row per step.

    Rows that emit EOS leave the batch (their cache rows are dropped), so finished samples cost
    nothing. Returns tokens, tok_logps, sampler tok_logps, mask (N, steps) and EOS flags (N,).
    """
    N, device = logits.shape[0], logits.device
    width = attn.shape[1] - max_new_tokens
    tokens = torch.full((N, max_new_tokens), pad_id, dtype=torch.long, device=device)
    tok_logps = torch.zeros((N, max_new_tokens), dtype=torch.float32, device=device)
    samp_logps = torch.zeros((N, max_new_tokens), dtype=torch.float32, device=device)
    alive = torch.zeros((N, max_new_tokens), dtype=torch.bool, device=device)  # token t is in y
    done = torch.zeros(N, dtype=torch.bool, device=device)  # EOS emitted
    rows = torch.arange(N, device=device)  # original row of each row still decoding
    steps = 0
    for t in range(max_new_tokens):
        tok, lp, slp = draw(logits.float(), rows, t)  # (A,) x3 over the A active rows
        tokens[rows, t], tok_logps[rows, t], samp_logps[rows, t], alive[rows, t] = tok, lp, slp, True
        ended = tok == eos_id
        done[rows[ended]] = True
        steps = t + 1
        if bool(ended.all()) or steps == max_new_tokens:
            break
        if bool(ended.any()):
            keep = (~ended).nonzero().squeeze(-1)
            cache.batch_select_indices(keep)
            rows, tok, attn, next_pos = rows[keep], tok[keep], attn[keep], next_pos[keep]
        logits, out = hf.last_logits(model, {
            "input_ids": tok[:, None], "attention_mask": attn[:, : width + t + 1],
            "position_ids": next_pos[:, None] + t, "use_cache": True, hf.cache_keyword(model): cache,
        })
        cache = hf.cache_of(out)
    return tokens[:, :steps], tok_logps[:, :steps], samp_logps[:, :steps], alive[:, :steps], done


def _draw(logits: Tensor, temperature, top_k, top_p, generator, u: Tensor | None = None
          ) -> tuple[Tensor, Tensor, Tensor]:
    """One token per row from logits (N, V); returns (token, log π_τ(token), log sampler(token)).
    `u` (N, 1): the rows' uniforms (default: drawn from `generator`)."""
    if temperature == 0:  # greedy: the τ -> 0 limit; report log π_1 (see the module docstring)
        tok = logits.argmax(-1)
        lp = logits.log_softmax(-1).gather(-1, tok[:, None]).squeeze(-1)
        return tok, lp, torch.zeros_like(lp)
    scaled = scaled_logits(logits, temperature)
    truncated = (top_k and top_k < scaled.shape[-1]) or top_p < 1.0
    if not truncated:  # the sampler is π_τ itself: 4 passes over the (N, V) logits instead of 6
        top = scaled.amax(-1, keepdim=True)  # (N, 1)
        cdf = (scaled - top).exp_().cumsum(-1)  # (N, V) unnormalised CDF; its last column is the mass Z
        tok = _inverse_cdf(cdf, generator, u)
        lp = (scaled.gather(-1, tok[:, None]) - top - cdf[:, -1:].log()).squeeze(-1)  # log softmax at tok
        return tok, lp, lp
    policy = scaled.log_softmax(-1)  # (N, V) log π_τ
    sampler = _truncate(scaled, top_k, top_p).log_softmax(-1)  # (N, V) the sampler's, -inf outside top-k / top-p
    tok = _inverse_cdf(sampler.exp().cumsum(-1), generator, u)  # (N,)
    return tok, policy.gather(-1, tok[:, None]).squeeze(-1), sampler.gather(-1, tok[:, None]).squeeze(-1)


def _inverse_cdf(cdf: Tensor, generator, u: Tensor | None = None) -> Tensor:
    """One draw per row from the cumulative (unnormalised) masses cdf (N, V) by inverting it at
    u ~ U[0, 1): (N,) token ids.

    The same law as torch.multinomial(probs, 1), at one uniform per row instead of one exponential
    per vocabulary entry (50k per row for Pythia: 12 ms of a 16-row decode step on 2 CPU threads).
    The token is the first index whose cumulative mass exceeds u × total, so a zero-probability
    token (outside top-k / top-p) is never drawn: its cumulative mass equals its predecessor's.
    """
    if u is None:
        u = torch.rand((cdf.shape[0], 1), generator=generator, device=cdf.device, dtype=cdf.dtype)
    u = u.to(cdf.dtype)
    tok = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(-1)
    return tok.clamp(max=cdf.shape[-1] - 1)  # u * total rounds to total only in float corner cases


def _truncate(scaled: Tensor, top_k: int, top_p: float) -> Tensor:
    """Set logits outside the top-k and outside the smallest top-p nucleus to -inf.   (N, V) -> (N, V)"""
    if top_k and top_k < scaled.shape[-1]:
        kth = scaled.topk(top_k, dim=-1).values[:, -1:]  # (N, 1)
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = scaled.sort(-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop a token when the more likely tokens before it already hold top_p of the mass
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p  # the most likely token is always kept
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        scaled = scaled.masked_fill(drop, float("-inf"))
    return scaled


def stop_string_lengths(tokens: Tensor, mask: Tensor, stop_strings, tokenizer) -> Tensor:
    """For each sample, the number of tokens up to and including the one completing its first
    stop string, or -1 when none occurs. Decodes each sample once, then binary-searches the
    shortest prefix whose text contains a stop string (containment is monotone in the prefix)."""
    cuts = []
    for row, m in zip(tokens.tolist(), mask.tolist()):
        ids = [t for t, keep in zip(row, m) if keep]
        contains = lambda n: any(s in tokenizer.decode(ids[:n]) for s in stop_strings)  # noqa: E731
        if not ids or not contains(len(ids)):
            cuts.append(-1)
            continue
        lo, hi = 1, len(ids)  # the shortest n with contains(n) lies in [lo, hi]
        while lo < hi:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if contains(mid) else (mid + 1, hi)
        cuts.append(lo)
    return torch.tensor(cuts, dtype=torch.long, device=tokens.device)


def _check_args(prompts, k, max_new_tokens, temperature, top_p, top_k, stop_strings, tokenizer):
    if not prompts:
        raise ValueError("sample needs at least one prompt")
    for i, p in enumerate(prompts):
        if not p:
            raise ValueError(f"prompt {i} is empty: nothing to condition the first token on")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 = off), got {top_k}")
    if stop_strings and tokenizer is None:
        raise ValueError("stop_strings need a tokenizer to decode the samples")
    if stop_strings and not all(isinstance(s, str) and s for s in stop_strings):
        raise ValueError(f"stop_strings must be non-empty strings, got {stop_strings!r}")
