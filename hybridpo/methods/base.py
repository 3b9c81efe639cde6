"""The method interface: what the training loop knows about an algorithm, and what it hands it.

A method turns one micro-batch of examples into a scalar loss and a dict of metrics. Everything
else (optimizer, schedule, accumulation, clipping, checkpoints, logging) is the loop's. Class
attributes tell the loop what to build:

    needs_reference      ctx.reference: π_ref (hybridpo.models.Reference)
    needs_reward         ctx.reward scores samples: the model.reward_model, or the method's
                         `scorer` option (a program on the decoded text) when it sets one
    data_kind            "preferences" (PreferenceExample) or "prompts" (PromptExample)
    model_head           "causal_lm" (ctx.policy is a hybridpo.models.Policy) or "reward"
                         (ctx.policy is the hybridpo.models.RewardModel being trained)

The method calls the role objects downward: `ctx.policy.logps(...)`, `ctx.policy.prompt_pass(...)`,
`ctx.policy.sample(...)`, `ctx.reference.logps(...)`, `ctx.reward.score(...)`. Methods with
state across steps (e.g. a dual variable) return it from `state_dict`, so checkpoints and
--resume carry it, and update it in `after_step`, which the loop calls once per optimizer step
with that step's metrics averaged over micro-batches and processes (the same on every rank).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor


@dataclass
class MethodArgs:
    """Base of every method's options dataclass (YAML `method_args:`). A subclass checks its
    values in `__post_init__`, so a bad value fails when the config is read, naming the key."""


def positive(cfg, *names: str, strict: bool = True) -> None:
    """Check that each named option is > 0 (strict) or >= 0; the error names the option."""
    for name in names:
        value = getattr(cfg, name)
        if not (value > 0 if strict else value >= 0):
            raise ValueError(f"{name}={value}; must be {'>' if strict else '>='} 0")


@dataclass
class MethodContext:
    policy: Any  # the trained model's role: hybridpo.models.Policy (or RewardModel for model_head "reward")
    reference: Any | None = None  # hybridpo.models.Reference when the method needs π_ref, else None
    reward: Any | None = None  # hybridpo.models.RewardModel / TextReward when the method scores samples, else None
    tokenizer: Any = None  # the tokenizer (stop strings, logging text)
    pad_id: int = 0  # padding token id
    eos_id: int = 0  # end-of-sequence token id
    step: int = 0  # optimizer steps done so far (updated by the loop)


class Method:
    """Base class: subclasses set the class attributes and implement `loss`."""

    name: ClassVar[str] = ""
    Config: ClassVar[type]  # a MethodArgs dataclass of the method's options (YAML `method_args:`)
    needs_reference: ClassVar[bool] = False
    needs_reward: ClassVar[bool] = False
    data_kind: ClassVar[str] = "preferences"
    model_head: ClassVar[str] = "causal_lm"

    def __init__(self, cfg):
        self.cfg = cfg

    def prepare(self, train_examples: list, ctx: MethodContext) -> None:
        """Called once before the first step (e.g. to precompute reference log-probs)."""

    def loss(self, batch: list, ctx: MethodContext) -> tuple[Tensor, dict[str, float]]:
        """One micro-batch -> (scalar loss to minimise, metrics)."""
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, batch: list, ctx: MethodContext) -> dict[str, float]:
        """Held-out metrics of one batch; by default the training metrics without grad."""
        _, metrics = self.loss(batch, ctx)
        return metrics

    def after_step(self, metrics: dict[str, float]) -> None:
        """Once per optimizer step, after the update, with its metrics (mean over micro-batches and processes)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
