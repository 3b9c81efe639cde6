"""What the online methods (hypo, online_dpo, rlhf) share: sampling options and calls,
text scorers, and the per-step sample metrics.

Metrics of the samples (names from docs/ARCHITECTURE.md):
    kl               mean sequence reverse KL(π_τ‖π_ref,τ) on the samples: mean of log π/π_ref
                     (losses.sequence_kl), both at the sampling temperature τ (τ = 1: π itself)
    entropy          mean over all sampled tokens of -log π_τ(y_t | x, y_<t): a Monte-Carlo estimate
                     of the per-token entropy of the sampling policy (token-weighted, nats)
    response_length  mean tokens per sample (EOS included)
    eos_rate         share of samples that ended with EOS within max_new_tokens

`sample_time_share` (the share of a step's wall time spent sampling) is measured by the loop around
ctx.sample, since only the loop sees the backward and optimizer time.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from hybridpo.losses import sequence_kl
from hybridpo.methods.base import MethodContext
from hybridpo.rollout import Rollout


@dataclass
class SamplingArgs:
    """Options of the no-grad sampler (hybridpo.rollout.sample); inherited by each online Config."""

    k: int = 2  # completions sampled per prompt (≥ 2: the leave-one-out baseline / best-vs-worst need two)
    max_new_tokens: int = 53  # sample length cap (paper TL;DR: 53)
    temperature: float = 1.0  # sampling temperature τ; the samples' log-probs use the same τ (1.0 = π itself)
    top_p: float = 1.0  # nucleus truncation of the sampler (1.0 = off); log-probs stay those of π_τ
    top_k: int = 0  # top-k truncation of the sampler (0 = off)
    stop_strings: list[str] | None = None  # decoded strings that end a sample (kept in it), e.g. ["\n"]


def check_sampling(cfg: SamplingArgs) -> None:
    if cfg.k < 2:
        raise ValueError(f"method_args.k={cfg.k}; online methods need k >= 2 samples per prompt")
    if cfg.max_new_tokens < 1:
        raise ValueError(f"method_args.max_new_tokens={cfg.max_new_tokens}; must be >= 1")
    if not cfg.temperature > 0:
        raise ValueError(f"method_args.temperature={cfg.temperature}; must be > 0 (log-probs of greedy samples are not π's)")


def draw(ctx: MethodContext, prompts: list[list[int]], cfg: SamplingArgs, prompt_pass=None) -> Rollout:
    """k samples per prompt from the current policy (no grad), with the config's sampler options;
    from `prompt_pass` (see `shared_prompt_pass`) when given, instead of a prefill of its own."""
    if ctx.sample is None:
        raise ValueError("this method samples online but the context has no sampler (ctx.sample is None)")
    extra = {"prompt_pass": prompt_pass} if prompt_pass is not None else {}
    return ctx.sample(
        prompts, cfg.k, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
        top_p=cfg.top_p, top_k=cfg.top_k, stop_strings=cfg.stop_strings, **extra,
    )


def policy_logps(ctx: MethodContext, prompts, responses, temperature: float = 1.0, prompt_pass=None):
    """ctx.logps, after `prompt_pass` when there is one (contexts without prompt passes need not take it)."""
    extra = {"prompt_pass": prompt_pass} if prompt_pass is not None else {}
    return ctx.logps(prompts, responses, temperature=temperature, **extra)


def shared_prompt_pass(ctx: MethodContext, prompts: list[list[int]]):
    """One policy forward of the prompts for this step's sampling AND its loss (issue 7), or None
    where the context cannot share it (then each runs the prompts itself; the numbers are the same
    either way). The pass is packed (`prompt_cache.prefill`: no padding computed), so sharing
    always saves the sampler's prefill."""
    return None if ctx.prompt_pass is None else ctx.prompt_pass(prompts)


def sample_metrics(rollout: Rollout, policy_logps: Tensor, ref_logps: Tensor) -> dict[str, float]:
    """The metrics of the module docstring; policy_logps, ref_logps (P, k) at the sampling τ."""
    tokens = rollout.lengths.sum().clamp(min=1)
    return {
        "kl": sequence_kl(policy_logps.float(), ref_logps.float()).mean().item(),
        "entropy": (-rollout.tok_logps.sum() / tokens).item(),
        "response_length": rollout.lengths.float().mean().item(),
        "eos_rate": rollout.eos.float().mean().item(),
    }


def sample_tokens(prompts: list[list[int]], rollout: Rollout) -> int:
    """Prompt + sampled tokens of a step (each prompt counted once), for the loop's tokens/s."""
    return sum(len(p) for p in prompts) + int(rollout.lengths.sum())


def load_scorer(spec: str) -> Callable[[str, str], float]:
    """"package.module:function" -> the function f(prompt_text, response_text) -> float."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"method_args.scorer={spec!r}; write it as 'package.module:function' (e.g. hybridpo.tasks.gold:gold_reward)")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"method_args.scorer={spec!r}: cannot load it ({e})") from None
    if not callable(fn):
        raise ValueError(f"method_args.scorer={spec!r} is not callable")
    return fn


def resolve_scorer(spec: str, given: Callable | None) -> Callable | None:
    """The text scorer of an online method: `given` (tests, benchmarks), else `spec` loaded, else
    None, meaning the reward model (ctx.reward) scores the samples."""
    if given is not None:
        return given
    return load_scorer(spec) if spec else None


def score(ctx: MethodContext, scorer: Callable | None, prompts: list[list[int]], rollout: Rollout) -> Tensor:
    """Rewards (P, k) of the samples: the text scorer when given, else the reward model (ctx.reward)."""
    P, k = len(prompts), len(rollout.responses[0])
    if scorer is not None:
        decode = ctx.tokenizer.decode
        rows = []
        for p, samples in zip(prompts, rollout.responses):
            prompt_text = decode(p, skip_special_tokens=True)
            rows.append([float(scorer(prompt_text, decode(s, skip_special_tokens=True))) for s in samples])
        return torch.tensor(rows, dtype=torch.float32, device=rollout.logps.device)
    if ctx.reward is None:
        raise ValueError("no reward: set model.reward_model (a folder saved by method=rm) or method_args.scorer")
    return ctx.reward(prompts, rollout.responses).float().view(P, k).to(rollout.logps.device)
