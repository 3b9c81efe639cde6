"""DPO (paper Eq. 4) and IPO (paper Appendix B.1) on offline preference pairs.

Both act on h = log π(y+)/π_ref(y+) - log π(y-)/π_ref(y-) (hybridpo.losses.dpo_logits); chosen and
rejected go through the policy in one forward (ctx.policy.logps). π_ref's log-probs of offline
pairs never change, so with `precompute_ref_logps` they are computed once for the whole training
set before step 1 and looked up afterwards (pairs not seen then, e.g. held-out ones, are computed
on first use and cached too).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hybridpo.data.examples import PreferenceExample
from hybridpo.losses import dpo_loss, implicit_rewards, ipo_loss
from hybridpo.methods.base import Method, MethodArgs, MethodContext, positive


@dataclass
class DPOConfig(MethodArgs):
    beta: float = 0.1  # β: strength of the implicit KL to π_ref in Eq. 4 (paper Tables 5, 9: 0.05)
    precompute_ref_logps: bool = False  # compute π_ref log-probs of all training pairs once before training, then reuse them

    def __post_init__(self):
        positive(self, "beta")


@dataclass
class IPOConfig(MethodArgs):
    beta: float = 0.1  # τ = β of Appendix B.1: the loss pulls h to 1 / (2β)
    ipo_average_logps: bool = False  # divide each log-prob by its response length first (TRL's IPO); False = the paper's sequence sums
    precompute_ref_logps: bool = False  # as for dpo

    def __post_init__(self):
        positive(self, "beta")


def pair_logps(policy: torch.Tensor) -> dict[str, float]:
    """TRL's `logps/chosen`, `logps/rejected` from (B, 2) policy log-probs (chosen, rejected)."""
    return {"logps/chosen": policy[:, 0].mean().item(), "logps/rejected": policy[:, 1].mean().item()}


def pair_metrics(policy: torch.Tensor, ref: torch.Tensor, beta: float) -> dict[str, float]:
    """TRL's pair metrics from (B, 2) log-probs (chosen, rejected) of π and π_ref: the implicit
    rewards β log π/π_ref (`rewards/*`) and the policy's `logps/*`. Shared by every DPO-style method."""
    chosen_r = implicit_rewards(policy[:, 0], ref[:, 0], beta)  # (B,)
    rejected_r = implicit_rewards(policy[:, 1], ref[:, 1], beta)  # (B,)
    return {
        "rewards/chosen": chosen_r.mean().item(),
        "rewards/rejected": rejected_r.mean().item(),
        "rewards/margins": (chosen_r - rejected_r).mean().item(),
        "rewards/accuracies": (chosen_r > rejected_r).float().mean().item(),
        **pair_logps(policy),
    }


class DPO(Method):
    name = "dpo"
    Config = DPOConfig
    needs_reference = True
    average_logps = False  # whether h is built from per-token averaged log-probs

    def __init__(self, cfg):
        super().__init__(cfg)
        self._ref_cache: dict[tuple, torch.Tensor] = {}  # pair ids -> (2,) π_ref logps (chosen, rejected)

    @staticmethod
    def pair_loss(pc, pr, rc, rr, beta):
        return dpo_loss(pc, pr, rc, rr, beta)  # Eq. 4

    def prepare(self, train_examples, ctx: MethodContext) -> None:
        if not self.cfg.precompute_ref_logps:
            return
        chunk = 16
        for start in range(0, len(train_examples), chunk):
            self._reference(train_examples[start : start + chunk], ctx)

    def loss(self, batch: list[PreferenceExample], ctx: MethodContext):
        B = len(batch)
        prompts = [ex.prompt_ids for ex in batch]
        pol = ctx.policy.logps(prompts, [[ex.chosen_ids, ex.rejected_ids] for ex in batch])
        policy = pol.logps.view(B, 2)  # (B, 2): chosen, rejected
        ref = self._reference(batch, ctx).to(policy.device)  # (B, 2)
        lengths = pol.lengths.view(B, 2).to(policy.dtype)
        pi, rf = (policy / lengths, ref / lengths) if self.average_logps else (policy, ref)
        losses = self.pair_loss(pi[:, 0], pi[:, 1], rf[:, 0], rf[:, 1], self.cfg.beta)  # (B,)
        # implicit rewards from the log-probs h is built from; logps/* always the sequence sums
        metrics = {"loss": losses.mean().item(), **pair_metrics(pi, rf, self.cfg.beta), **pair_logps(policy)}
        return losses.mean(), metrics

    def _reference(self, batch: list[PreferenceExample], ctx: MethodContext) -> torch.Tensor:
        """π_ref sequence log-probs (B, 2): chosen, rejected; looked up when precomputing."""
        if not self.cfg.precompute_ref_logps:
            return self._fresh_reference(batch, ctx)
        keys = [(tuple(ex.prompt_ids), tuple(ex.chosen_ids), tuple(ex.rejected_ids)) for ex in batch]
        missing = [i for i, k in enumerate(keys) if k not in self._ref_cache]
        if missing:
            fresh = self._fresh_reference([batch[i] for i in missing], ctx).cpu()
            for i, row in zip(missing, fresh):
                self._ref_cache[keys[i]] = row
        return torch.stack([self._ref_cache[k] for k in keys])

    @staticmethod
    def _fresh_reference(batch: list[PreferenceExample], ctx: MethodContext) -> torch.Tensor:
        out = ctx.reference.logps([ex.prompt_ids for ex in batch], [[ex.chosen_ids, ex.rejected_ids] for ex in batch])
        return out.logps.detach().float().view(len(batch), 2)


class IPO(DPO):
    name = "ipo"
    Config = IPOConfig

    def __init__(self, cfg):
        super().__init__(cfg)
        self.average_logps = cfg.ipo_average_logps

    @staticmethod
    def pair_loss(pc, pr, rc, rr, beta):
        return ipo_loss(pc, pr, rc, rr, beta)  # Appendix B.1: (h - 1/(2β))²
