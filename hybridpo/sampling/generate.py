"""A second sampler behind the `Sampler` seam: transformers' `generate` runs the decode.

It exists to show the seam holds with an implementation that is not ours, the way an inference
engine would serve (docs/generation_engine.md), and passes the built-in sampler's tests
(tests/distributed/test_samplers.py): the log-probs it returns are the scorer's
(`hybridpo.forward.response_logps` of the same samples), nothing follows an EOS, the same seed
gives the same samples.

How: `generate` with `do_sample=False` decodes all P*k rows in ONE batched call (its own KV cache,
left padding, EOS bookkeeping), and a logits processor, `_Draw`, makes each step's choice: from
the raw logits it takes π_τ = softmax(logits / τ) (`forward.scaled_logits`, the scorer's scaling),
narrows it with transformers' own top-k / top-p warpers into the sampler's distribution, inverts
that CDF at the row's uniform U[row, t], records log π_τ(token) and log sampler(token), and hands
`generate` scores that are -inf everywhere but the drawn token, which greedy search then takes.
U is `sampling.row_uniforms(seeds, k, ...)` with per-example seeds (a prompt's samples depend on
its seed alone, not on the batch it was drawn in), else one (P*k, max_new_tokens) draw from the
policy's generator. A step's draw for a row that has already ended is discarded.

Differences from the built-in sampler, stated: `prompt_pass` is not used (generate runs its own
prefill, so the prompts run twice in a step that also scores them); finished rows stay in the
batch until every row ends (generate pads them); same law, other random numbers, so the two
samplers draw other tokens from the same seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from hybridpo.forward import hf, scaled_logits
from hybridpo.forward.layout import left_padded
from hybridpo.rollout import Rollout, assemble  # rollout's cut and masking: both samplers end samples by one rule
from hybridpo.sampling.seeds import row_uniforms


@dataclass
class GenerateSampler:
    """`speed.sampler: generate`: transformers' generate with a drawing logits processor."""

    @torch.no_grad()
    def __call__(self, model, prompts: list[list[int]], k: int, *, max_new_tokens: int, eos_id: int, pad_id: int,
                 temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, stop_strings: list[str] | None = None,
                 tokenizer=None, generator: torch.Generator | None = None, prompt_pass=None,
                 seeds: list[int] | None = None) -> Rollout:
        from transformers import GenerationConfig, LogitsProcessorList

        _check(prompts, k, max_new_tokens, temperature, top_p, top_k, stop_strings, tokenizer, seeds)
        device, P, N = hf.device_of(model), len(prompts), len(prompts) * k
        ids, attn, _ = left_padded(prompts, pad_id)  # (P, W) each; generate derives positions from attn
        ids, attn = ids.repeat_interleave(k, 0).to(device), attn.repeat_interleave(k, 0).to(device)  # row i*k + j
        W = ids.shape[1]
        if seeds is not None:
            uniforms = row_uniforms(seeds, k, max_new_tokens, device)
        else:
            g_device = generator.device if generator is not None else torch.device("cpu")
            uniforms = torch.rand((N, max_new_tokens), generator=generator, device=g_device).to(device)
        draw = _Draw(uniforms, W, temperature, top_k, top_p)
        config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=max_new_tokens, min_new_tokens=0,
                                  eos_token_id=eos_id if eos_id >= 0 else None, pad_token_id=pad_id)
        was_training = model.training
        model.eval()
        try:
            out = model.generate(input_ids=ids, attention_mask=attn, generation_config=config,
                                 logits_processor=LogitsProcessorList([draw]))
        finally:
            model.train(was_training)
        tokens = out[:, W:]  # (N, steps), generate's pad after a row ended
        steps = tokens.shape[1]
        tok_logps, samp_logps = torch.stack(draw.tok_logps, 1)[:, :steps], torch.stack(draw.samp_logps, 1)[:, :steps]
        is_eos = tokens == eos_id
        alive = (is_eos.long().cumsum(-1) - is_eos.long()) == 0  # (N, steps) up to and including the first EOS
        return assemble(tokens, tok_logps, samp_logps, alive, is_eos.any(-1), P, k, eos_id=eos_id, pad_id=pad_id,
                        stop_strings=stop_strings, tokenizer=tokenizer)


class _Draw:
    """A transformers logits processor that draws each row's token itself (see the module docstring)."""

    def __init__(self, uniforms: Tensor, prompt_width: int, temperature: float, top_k: int, top_p: float):
        from transformers import TopKLogitsWarper, TopPLogitsWarper

        self.uniforms, self.width, self.temperature = uniforms, prompt_width, temperature
        self.warpers = []
        if top_k:
            self.warpers.append(TopKLogitsWarper(top_k=top_k))
        if top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p=top_p))
        self.tok_logps: list[Tensor] = []  # per step (N,): log π_τ(token)
        self.samp_logps: list[Tensor] = []  # per step (N,): log sampler(token)

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        t = input_ids.shape[1] - self.width  # tokens generated so far
        logits = scores.float()  # (N, V)
        if self.temperature == 0:  # greedy; log π_1, as the built-in sampler reports
            tok = logits.argmax(-1)
            lp = logits.log_softmax(-1).gather(-1, tok[:, None]).squeeze(-1)
            slp = torch.zeros_like(lp)
        else:
            scaled = scaled_logits(logits, self.temperature)
            sampler = scaled
            for warp in self.warpers:
                sampler = warp(input_ids, sampler)
            sampler = sampler.log_softmax(-1)  # (N, V) -inf outside top-k / top-p
            cdf = sampler.exp().cumsum(-1)
            u = self.uniforms[:, t : t + 1].to(cdf.dtype)  # (N, 1)
            tok = torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(-1).clamp(max=cdf.shape[-1] - 1)
            lp = scaled.log_softmax(-1).gather(-1, tok[:, None]).squeeze(-1)
            slp = sampler.gather(-1, tok[:, None]).squeeze(-1)
        self.tok_logps.append(lp)
        self.samp_logps.append(slp)
        chosen = torch.full_like(scores, float("-inf"))
        return chosen.scatter_(-1, tok[:, None], 0.0)


def _check(prompts, k, max_new_tokens, temperature, top_p, top_k, stop_strings, tokenizer, seeds):
    if not prompts or any(not p for p in prompts):
        raise ValueError("the sampler needs at least one prompt, and no empty prompt")
    if k < 1 or max_new_tokens < 1:
        raise ValueError(f"k={k} and max_new_tokens={max_new_tokens} must be >= 1")
    if temperature < 0 or not 0.0 < top_p <= 1.0 or top_k < 0:
        raise ValueError(f"temperature={temperature} >= 0, top_p={top_p} in (0, 1], top_k={top_k} >= 0")
    if stop_strings and tokenizer is None:
        raise ValueError("stop_strings need a tokenizer to decode the samples")
    if seeds is not None and len(seeds) != len(prompts):
        raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts: one per prompt")
