"""The policy as the methods see it: it scores responses, runs the prompts once, and samples.

    policy.logps(prompts, responses)            log π(y|x) with grad (hybridpo.forward)
    policy.prompt_pass(prompts)                 the prompts once this step, or None where sharing
                                                would change the numbers or is turned off
    policy.sample(prompts, k, prompt_pass=pp)   k completions per prompt, no grad (hybridpo.rollout)

Each call counts its wall time on the step clock ("policy forward", "sampling"), which is what the
loop logs as `sample_time_share` and the benchmark reports per phase. The sampler is a seam: any
object with the `Sampler` signature can serve instead of the built-in one (`speed.sampler`:
`BuiltinSampler` here, `hybridpo.sampling.GenerateSampler`; the contract an inference engine
meets is docs/generation_engine.md).

Seeds: with `seeds` (one per prompt, hybridpo.sampling.seeds) the samples of prompt i depend on
seeds[i] alone, not on the other prompts of the call, the process or the micro-batch; the loop
sets them for every training and evaluation micro-batch (`Policy.seeded`), so one process with
batch 4 and two with batch 2 draw the same samples for the same prompt at the same step. Without
seeds the sampler draws from the policy's `generator` (one stream for the whole call).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from hybridpo.fast import share_prompt_rule
from hybridpo.forward import PromptPass, ResponseLogps, prompt_pass, prompt_pass_unsupported_reason, response_logps
from hybridpo.models.clock import StepClock
from hybridpo.forward import hf
from hybridpo.rollout import Rollout, sample
from hybridpo.sampling.seeds import row_uniforms

SHARE_PROMPT = ("auto", "on", "off")


class Sampler(Protocol):
    """What draws the online samples: `Rollout` out, tokens and the sampler's own log-probs.

    Receives the model (its current weights), P prompts (token ids), k, EOS / pad ids, the
    tokenizer (stop strings), the policy's generator, the step's prompt pass (optional to use) and
    `seeds`: None, or one int per prompt, in which case sample j of prompt i must be a function of
    (seeds[i], j, the prompt, the weights) only. `options` are max_new_tokens, temperature, top_p,
    top_k, stop_strings (hybridpo.rollout.sample's meaning). `Rollout.logps` must be log π_τ of the
    returned tokens under the scorer's conventions (hybridpo.forward.response_logps, EOS counted,
    nothing after it); docs/generation_engine.md says what a sampler that cannot promise that does.
    """

    def __call__(self, model: nn.Module, prompts: list[list[int]], k: int, *, eos_id: int, pad_id: int,
                 tokenizer: Any, generator: torch.Generator, prompt_pass: PromptPass | None,
                 seeds: list[int] | None = None, **options) -> Rollout: ...


@dataclass
class BuiltinSampler:
    """hybridpo.rollout.sample with the run's speed settings (hybridpo.fast's auto rules); with
    per-example `seeds`, row n's token t is drawn at hybridpo.sampling.row_uniforms(seeds, ...)[n, t],
    in the same one batched decode."""

    decoder: str = "auto"  # sample(decoder=): "auto", "neox" or "transformers"
    kv_cache: str = "auto"  # sample(kv_cache=): "auto", "preallocated" or "dynamic"
    decode_gemm: str = "auto"  # sample(decode_gemm=): "auto", "panels" or "library"

    def __call__(self, model, prompts, k, *, generator=None, prompt_pass=None, seeds=None, **kwargs) -> Rollout:
        options = dict(decoder=self.decoder, kv_cache=self.kv_cache, decode_gemm=self.decode_gemm, **kwargs)
        if seeds is None:
            return sample(model, prompts, k, generator=generator, prompt_pass=prompt_pass, **options)
        if len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} seeds for {len(prompts)} prompts: one per prompt")
        uniforms = row_uniforms(seeds, k, kwargs["max_new_tokens"], hf.device_of(model))
        return sample(model, prompts, k, generator=generator, prompt_pass=prompt_pass, uniforms=uniforms, **options)


@dataclass
class Policy:
    model: nn.Module  # the model being trained (a transformers causal LM, peft-wrapped or not)
    pad_id: int  # padding id (never read as a token: masks come from lengths)
    eos_id: int  # end of a sample
    tokenizer: Any = None  # decodes samples for stop strings
    layout: str = "packed"  # hybridpo.forward.logprobs layout of `logps`
    share_prompt: str = "auto"  # prompt_pass: "auto" (where it gives the same numbers and hybridpo.fast.share_prompt_rule says it pays), "on" (an error where not), "off"
    elementwise: str = "auto"  # response_logps / prompt_pass(elementwise=): a block's elementwise chains compiled ("compiled") or not ("eager"); "auto" = hybridpo.fast.elementwise_for's rule
    span_kernel: str = "auto"  # response_logps / prompt_pass(span_kernel=): attention span by span on our kernel ("ours") or torch's flash kernel ("flash"); "auto" = hybridpo.fast.span_kernel_for's rule
    train_gemm: str = "auto"  # response_logps / prompt_pass(train_gemm=): the fp32 products on oneDNN ("onednn") or MKL ("library"); "auto" = hybridpo.fast.train_gemm_for's rule
    generator: torch.Generator = field(default_factory=torch.Generator)  # the sampling RNG (checkpointed by the loop)
    sampler: Sampler = field(default_factory=BuiltinSampler)  # what draws the samples
    clock: StepClock = field(default_factory=StepClock)  # where the time of each call is counted
    _seeds: list[int] | None = field(default=None, init=False, repr=False)  # set by `seeded`

    def __post_init__(self):
        if self.share_prompt not in SHARE_PROMPT:
            raise ValueError(f"share_prompt={self.share_prompt!r}; choose from {list(SHARE_PROMPT)}")

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def logps(self, prompts: list[list[int]], responses: list[list[list[int]]], *, temperature: float = 1.0,
              prompt_pass: PromptPass | None = None) -> ResponseLogps:
        """log π_τ(y|x) of every response, with grad when the caller has it."""
        with self.clock.time("policy forward"):
            return response_logps(self.model, prompts, responses, pad_id=self.pad_id, temperature=temperature,
                                  layout=self.layout, prompt_pass=prompt_pass, elementwise=self.elementwise,
                                  span_kernel=self.span_kernel, train_gemm=self.train_gemm)

    def prompt_pass(self, prompts: list[list[int]], responses: list[list[list[int]]] | None = None,
                    samples: tuple[int, int] | None = None) -> PromptPass | None:
        """One forward of the prompts (grad as the caller has it) for this step's sampling AND its
        log-probs, or None where that would change the numbers (dropout in training mode, gradient
        checkpointing, a DDP wrapper, a model that cannot pack) or `share_prompt` is "off"; the
        numbers are the same either way. With "auto", also None where hybridpo.fast.share_prompt_rule
        finds the packed layout cheaper for the `responses` known now (the offline ones the step
        will score) plus `samples` = (k, max_new_tokens), the sampling budget: then the sampler
        prefills the prompts itself, without grad."""
        if self.share_prompt == "off" or self.layout != "packed":
            return None
        reason = prompt_pass_unsupported_reason(self.model)
        if reason is not None:
            if self.share_prompt == "on":
                raise ValueError(f"share_prompt='on' but the prompt pass is not available: {reason}")
            return None
        if self.share_prompt == "auto" and not share_prompt_rule(self.model, prompts, responses, samples):
            return None
        with self.clock.time("policy forward"):
            return prompt_pass(self.model, prompts, pad_id=self.pad_id, elementwise=self.elementwise,
                               span_kernel=self.span_kernel, train_gemm=self.train_gemm)

    @contextmanager
    def seeded(self, seeds: list[int] | None):
        """Within the block, `sample` calls without seeds of their own use these (one per prompt of
        the micro-batch): the loop's per-example seeds reach the methods' draws this way."""
        previous, self._seeds = self._seeds, seeds
        try:
            yield self
        finally:
            self._seeds = previous

    def sample(self, prompts: list[list[int]], k: int, *, prompt_pass: PromptPass | None = None,
               stop_at_eos: bool = True, seeds: list[int] | None = None, **options) -> Rollout:
        """k samples per prompt from the current policy, no grad, in eval mode (no dropout: samples
        come from π itself); `options` are hybridpo.rollout.sample's (max_new_tokens, temperature,
        top_p, top_k, stop_strings). `seeds`: one per prompt (default: those of `seeded`, else
        none: the policy's generator). `stop_at_eos=False` decodes every sample to max_new_tokens
        (fixed-length work, for benchmarks)."""
        seeds = seeds if seeds is not None else self._seeds
        if seeds is not None and len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} sampling seeds for {len(prompts)} prompts: a method must sample "
                             "the prompts of its micro-batch, in order")
        was_training = self.model.training
        self.model.eval()
        try:
            with self.clock.time("sampling"):
                rollout = self.sampler(self.model, prompts, k, eos_id=self.eos_id if stop_at_eos else -1,
                                       pad_id=self.pad_id, tokenizer=self.tokenizer, generator=self.generator,
                                       prompt_pass=prompt_pass, seeds=seeds, **options)
        finally:
            self.model.train(was_training)
        self.clock.sample_lengths.extend([len(s) for s in samples] for samples in rollout.responses)
        return rollout
