"""What the online methods (hypo, online_dpo, rlhf) share: sampling options, the draw, and the
per-step sample metrics.

Metrics of the samples:
    kl               mean sequence reverse KL(π_τ‖π_ref,τ) on the samples: mean of log π/π_ref
                     (losses.sequence_kl), both at the sampling temperature τ (τ = 1: π itself)
    entropy          mean over all sampled tokens of -log π_τ(y_t | x, y_<t): a Monte-Carlo estimate
                     of the per-token entropy of the sampling policy (token-weighted, nats)
    response_length  mean tokens per sample (EOS included)
    eos_rate         share of samples that ended with EOS within max_new_tokens

`sample_time_share` (the share of a step's wall time spent sampling) is the loop's: only it sees
the backward and optimizer time.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from hybridpo.losses import sequence_kl
from hybridpo.methods.base import MethodArgs, MethodContext
from hybridpo.rollout import Rollout


@dataclass
class SamplingArgs(MethodArgs):
    """Options of the no-grad sampler (hybridpo.rollout.sample); inherited by each online Config."""

    k: int = 2  # completions sampled per prompt (≥ 2: the leave-one-out baseline / best-vs-worst need two)
    max_new_tokens: int = 53  # sample length cap (paper TL;DR: 53)
    temperature: float = 1.0  # sampling temperature τ; the samples' log-probs use the same τ (1.0 = π itself)
    top_p: float = 1.0  # nucleus truncation of the sampler (1.0 = off); log-probs stay those of π_τ
    top_k: int = 0  # top-k truncation of the sampler (0 = off)
    stop_strings: list[str] | None = None  # decoded strings that end a sample (kept in it), e.g. ["\n"]
    stop_at_eos: bool = True  # False: every sample runs max_new_tokens tokens (fixed-length work, for benchmarks)

    def __post_init__(self):
        if self.k < 2:
            raise ValueError(f"k={self.k}; online methods need k >= 2 samples per prompt")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens}; must be >= 1")
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature}; must be > 0 (log-probs of greedy samples are not π's)")
        if not 0.0 < self.top_p <= 1.0 or self.top_k < 0:
            raise ValueError(f"top_p={self.top_p} must be in (0, 1] and top_k={self.top_k} >= 0")


def draw(ctx: MethodContext, prompts: list[list[int]], cfg: SamplingArgs, prompt_pass=None) -> Rollout:
    """k samples per prompt from the current policy (no grad) with the config's sampler options;
    from `prompt_pass` (ctx.policy.prompt_pass) when given, instead of a prefill of its own."""
    return ctx.policy.sample(
        prompts, cfg.k, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
        top_k=cfg.top_k, stop_strings=cfg.stop_strings, stop_at_eos=cfg.stop_at_eos, prompt_pass=prompt_pass,
    )


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


def scores(ctx: MethodContext, prompts: list[list[int]], rollout: Rollout) -> Tensor:
    """Rewards (P, k) of the samples from ctx.reward (a reward model or a text scorer)."""
    if ctx.reward is None:
        raise ValueError("no reward: set model.reward_model (a folder saved by method=rm) or method_args.scorer")
    P, k = len(prompts), len(rollout.responses[0])
    return ctx.reward.score(prompts, rollout.responses).float().view(P, k).to(rollout.logps.device)
