"""Online DPO (the lecture's §22.5 controlled comparison): DPO on pairs the policy itself draws.

Each step: for each prompt x of the minibatch, sample n = k ≥ 2 completions from the current π
(no grad), score them with the reward model (ctx.reward) or a text scorer, and take the best as
y+ and the worst as y-. The loss is DPO's Eq. 4 on (x, y+, y-) (hybridpo.losses.dpo_loss), with
the same β, optimiser and schedule as offline `dpo`, so the only difference is where the pairs
come from. A prompt whose samples all score the same gives no pair: it is left out of the loss
and counted (`pairs/ties`).

The DPO term uses log-probs at τ = 1 (the DPO objective is about π itself); the KL metric uses
the sampler's log-probs and π_ref's at the sampling τ (hybridpo.methods.online).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hybridpo.data.examples import PromptExample
from hybridpo.losses import dpo_loss
from hybridpo.methods.base import Method, MethodContext, positive
from hybridpo.methods.dpo import pair_metrics
from hybridpo.methods.online import SamplingArgs, draw, sample_metrics, sample_tokens, scores


@dataclass
class OnlineDPOConfig(SamplingArgs):
    k: int = 4  # n, completions sampled per prompt; the best and the worst by reward form the pair (≥ 2)
    beta: float = 0.1  # β of Eq. 4, as for offline dpo (paper Table 5: 0.05)
    scorer: str = ""  # "package.module:function" f(prompt_text, response_text) -> float ranks the samples; "" = the reward model (model.reward_model)

    def __post_init__(self):
        super().__post_init__()
        positive(self, "beta")


class OnlineDPO(Method):
    name = "online_dpo"
    Config = OnlineDPOConfig
    needs_reference = True
    needs_reward = True
    data_kind = "prompts"

    def loss(self, batch: list[PromptExample], ctx: MethodContext):
        cfg, B = self.cfg, len(batch)
        prompts = [ex.prompt_ids for ex in batch]
        # the policy runs each prompt once, for sampling and the loss (which scores 2 of the k samples)
        pp = ctx.policy.prompt_pass(prompts, samples=(2, cfg.max_new_tokens))
        rollout = draw(ctx, prompts, cfg, pp)  # (B, k) samples of the current policy, no grad
        rewards = scores(ctx, prompts, rollout)  # (B, k)
        best, worst = rewards.argmax(dim=1), rewards.argmin(dim=1)  # (B,) ties: argmax == argmin index
        valid = (rewards.max(dim=1).values > rewards.min(dim=1).values).float()  # (B,) 1 where the pair is real
        pairs = [[s[int(b)], s[int(w)]] for s, b, w in zip(rollout.responses, best, worst)]

        # π_ref on all k samples at the sampling τ (for the KL metric; at τ = 1 also the pair's reference)
        ref_samples = ctx.reference.logps(prompts, rollout.responses, temperature=cfg.temperature).logps.float()
        ref_samples = ref_samples.view(B, cfg.k).to(rollout.logps.device)  # (B, k)
        policy = ctx.policy.logps(prompts, pairs, prompt_pass=pp).logps.view(B, 2)  # (B, 2): y+, y- in one packed forward, with grad
        if cfg.temperature == 1.0:
            ref = ref_samples.gather(1, torch.stack([best, worst], dim=1).to(ref_samples.device)).to(policy.device)
        else:
            ref = ctx.reference.logps(prompts, pairs).logps.float().view(B, 2)
        losses = dpo_loss(policy[:, 0], policy[:, 1], ref[:, 0], ref[:, 1], cfg.beta)  # (B,) Eq. 4
        loss = (losses * valid).sum() / valid.sum().clamp(min=1.0)

        metrics = {
            "loss": loss.item(),
            **pair_metrics(policy, ref, cfg.beta),
            "reward": rewards.mean().item(),
            "reward/best": rewards.max(dim=1).values.mean().item(),
            "reward/worst": rewards.min(dim=1).values.mean().item(),
            "pairs/ties": 1.0 - valid.mean().item(),
            **sample_metrics(rollout, rollout.logps, ref_samples),  # the sampler's log π_τ vs π_ref's
            "num_tokens": sample_tokens(prompts, rollout),
        }
        return loss, metrics

    @torch.no_grad()
    def evaluate(self, batch: list[PromptExample], ctx: MethodContext) -> dict[str, float]:
        return self.loss(batch, ctx)[1]
