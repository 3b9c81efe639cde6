"""The method interface: what the training loop knows about an algorithm, and what it hands it.

A method turns one micro-batch of examples into a scalar loss and a dict of metrics. Everything
else (optimizer, schedule, accumulation, clipping, checkpoints, logging) is the loop's. Class
attributes tell the loop what to build:

    needs_reference      π_ref log-probs are used (the loop builds the reference model)
    needs_reward_model   ctx.reward scores samples (the loop loads model.reward_model)
    data_kind            "preferences" (PreferenceExample) or "prompts" (PromptExample)
    model_head           "causal_lm" (a policy) or "reward" (a scalar-head model is trained)

Online methods sample inside `loss` with `ctx.sample` (no grad, policy in eval mode), score with
`ctx.reward`, and report their own metrics; methods with state across steps (e.g. a dual
variable) return it from `state_dict` so checkpoints and `--resume` carry it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor, nn


@dataclass
class MethodContext:
    policy: nn.Module  # the model being trained (possibly wrapped by accelerate); forward it with grad
    logps: Callable  # logps(prompts, responses, temperature=1.0, prompt_pass=None) -> ResponseLogps of the policy, with grad
    ref_logps: Callable | None  # the same for π_ref under no_grad; None when the method needs no reference
    sample: Callable | None  # sample(prompts, k, **rollout kwargs) -> hybridpo.rollout.Rollout from the policy, no grad
    reward: Callable | None  # reward(prompts, responses) -> (N,) reward-model scores, no grad; None when not configured
    tokenizer: Any  # the tokenizer (for stop strings, logging text)
    pad_id: int  # padding token id
    eos_id: int  # end-of-sequence token id
    generator: torch.Generator  # seeded RNG for sampling; its state is checkpointed
    device: torch.device  # where the policy lives
    step: int = 0  # optimizer steps done so far (updated by the loop)
    # prompt_pass(prompts) -> hybridpo.prompt_cache.PromptPass of the policy (grad as the caller has it), to hand
    # to both ctx.sample(..., prompt_pass=) and ctx.logps(..., prompt_pass=) so a step runs each prompt
    # once; returns None where sharing would change the numbers (see prompt_cache.prompt_pass_unsupported_reason)
    prompt_pass: Callable | None = None


class Method:
    """Base class: subclasses set the class attributes and implement `loss`."""

    name: ClassVar[str] = ""
    Config: ClassVar[type]  # a dataclass of the method's options (YAML `method_args:`)
    needs_reference: ClassVar[bool] = False
    needs_reward_model: ClassVar[bool] = False
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

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
