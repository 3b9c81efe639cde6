"""What scores online samples: a trained reward model, a program on the decoded text, or a DPO
policy's implicit reward.

All are called the same way by the methods: `reward.score(prompts, responses) -> (N,)` in
prompt-major order, no grad. `RewardModel(trainable=True)` is also the role of the model the `rm`
method trains (its scores then carry grad).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor, nn

from hybridpo.forward.logprobs import response_logps
from hybridpo.forward.reward import reward_scores
from hybridpo.models.clock import StepClock


@dataclass
class RewardModel:
    model: nn.Module  # a scalar-head (sequence-classification) model
    pad_id: int  # padding id (masks come from lengths)
    trainable: bool = False  # True for the model method=rm trains: scores keep their grad
    clock: StepClock = field(default_factory=StepClock)  # "reward" time

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def score(self, prompts: list[list[int]], responses: list[list[list[int]]]) -> Tensor:
        """r(x, y) at the last real token of every prompt + response.   -> (N,) fp32"""
        with self.clock.time("reward"), torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
            return reward_scores(self.model, prompts, responses, pad_id=self.pad_id)


@dataclass
class TextReward:
    fn: Callable[[str, str], float]  # f(prompt_text, response_text) -> reward
    tokenizer: Any  # decodes the ids (special tokens skipped)
    clock: StepClock = field(default_factory=StepClock)  # "reward" time

    def score(self, prompts: list[list[int]], responses: list[list[list[int]]]) -> Tensor:
        decode = self.tokenizer.decode
        with self.clock.time("reward"):
            rows = []
            for p, rs in zip(prompts, responses):
                prompt_text = decode(p, skip_special_tokens=True)
                rows += [float(self.fn(prompt_text, decode(r, skip_special_tokens=True))) for r in rs]
            return torch.tensor(rows, dtype=torch.float32)


@dataclass
class ImplicitReward:
    """DPO's implicit reward r(x, y) = β log π_dpo(y|x) / π_ref(y|x) (paper Eq. 5 solved for r) as a
    scorer of samples: the verifier of the lecture's generation-verification-gap test (§22.5.2),
    which ranks an online DPO run's samples with the offline DPO policy itself instead of a
    separately trained reward model. No grad; sequence sums at temperature 1, EOS included."""

    policy: nn.Module  # the trained DPO policy (a causal LM, frozen)
    reference: Any  # its π_ref: a hybridpo.models.Reference (or anything with .logps(prompts, responses))
    beta: float  # the β the DPO policy was trained with (Eq. 4): scales the log-ratio into a reward
    pad_id: int  # padding id (masks come from lengths)
    layout: str = "packed"  # hybridpo.forward layout of the policy's forward
    clock: StepClock = field(default_factory=StepClock)  # "reward" time

    def score(self, prompts: list[list[int]], responses: list[list[list[int]]]) -> Tensor:
        """β (log π_dpo(y|x) - log π_ref(y|x)) of every response.   -> (N,) fp32"""
        with self.clock.time("reward"), torch.no_grad():
            pol = response_logps(self.policy, prompts, responses, pad_id=self.pad_id, layout=self.layout).logps
            ref = self.reference.logps(prompts, responses).logps
            return (self.beta * (pol.float() - ref.float().to(pol.device))).float()


def load_scorer(spec: str) -> Callable[[str, str], float]:
    """"package.module:function" -> the function f(prompt_text, response_text) -> float."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"scorer={spec!r}; write it as 'package.module:function' (e.g. hybridpo.experiments.gold.task:gold_reward)")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"scorer={spec!r}: cannot load it ({e})") from None
    if not callable(fn):
        raise ValueError(f"scorer={spec!r} is not callable")
    return fn
