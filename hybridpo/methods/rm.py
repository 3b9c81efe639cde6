"""Reward-model training: Bradley-Terry on preference pairs, paper Eq. 3.

The model is a scalar-head model (`model_head = "reward"`: ctx.policy is the
hybridpo.models.RewardModel being trained); r(x, y) is read at the last real token
(hybridpo.forward.reward). Metrics use TRL's names: `rewards/accuracies` is the share of pairs
with r(x, y+) > r(x, y-) (on held-out pairs in the `eval/` rows).
"""

from __future__ import annotations

from dataclasses import dataclass

from hybridpo.data.examples import PreferenceExample
from hybridpo.losses import bradley_terry_loss
from hybridpo.methods.base import Method, MethodArgs, MethodContext, positive


@dataclass
class RewardModelConfig(MethodArgs):
    center_rewards_coef: float = 0.0  # adds coef * (r+ + r-)^2 to keep rewards centred at 0 (TRL's option; paper: 0)

    def __post_init__(self):
        positive(self, "center_rewards_coef", strict=False)


class RewardModel(Method):
    name = "rm"
    Config = RewardModelConfig
    model_head = "reward"

    def loss(self, batch: list[PreferenceExample], ctx: MethodContext):
        scores = ctx.policy.score(
            [ex.prompt_ids for ex in batch], [[ex.chosen_ids, ex.rejected_ids] for ex in batch]
        ).view(len(batch), 2)  # (B, 2): chosen, rejected
        chosen, rejected = scores[:, 0], scores[:, 1]
        loss = bradley_terry_loss(chosen, rejected).mean()  # Eq. 3
        if self.cfg.center_rewards_coef:
            loss = loss + self.cfg.center_rewards_coef * ((chosen + rejected) ** 2).mean()
        metrics = {
            "loss": loss.item(),
            "rewards/chosen": chosen.mean().item(),
            "rewards/rejected": rejected.mean().item(),
            "rewards/margins": (chosen - rejected).mean().item(),
            "rewards/accuracies": (chosen > rejected).float().mean().item(),
        }
        return loss, metrics
