"""Two-stage RLHF, stage 2: maximise E_π[r̂] − β KL(π‖π_ref) (paper §3) with RLOO.

r̂ is a reward model trained with method=rm (Eq. 3), or a text scorer. For each prompt, k ≥ 2
samples are drawn from the current π, scored, and the rewards are BOUNDED as the paper's analysis
assumes (Assumption 4.4, |r̂| ≤ R'): optionally standardised over the batch, then clipped to
[−reward_clip, reward_clip]. Samples that never finish within max_new_tokens (no EOS and no stop
string) can get a fixed score instead (the REBEL / TL;DR practice, `missing_eos_reward`; TRL's
`missing_eos_penalty`). β·log π/π_ref is folded into
the reward and the policy gradient uses leave-one-out advantages (hybridpo.losses.rloo_policy_loss).

Several updates per batch of samples (`updates_per_sample` = u > 1): the samples drawn at one step
are reused for the next u − 1 optimizer steps with PPO's clipped importance ratio π/π_old
(π_old = the sampler's log-probs), so the prompts the loop hands in during those steps are not used.
The reused samples are method state: checkpoints carry them, so --resume continues exactly.
With u = 1 every step samples afresh and the loss is plain RLOO (no ratio).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hybridpo.data.examples import PromptExample
from hybridpo.losses import rloo_policy_loss
from hybridpo.methods.base import Method, MethodContext, positive
from hybridpo.methods.online import SamplingArgs, draw, sample_metrics, sample_tokens, scores


@dataclass
class RLHFConfig(SamplingArgs):
    k: int = 4  # RLOO samples per prompt (≥ 2: the leave-one-out baseline needs another sample)
    beta: float = 0.05  # β, KL(π‖π_ref) coefficient folded into the reward (paper TL;DR: 0.05)
    scorer: str = ""  # "package.module:function" f(prompt_text, response_text) -> float; "" = the reward model (model.reward_model)
    reward_whiten: bool = False  # standardise rewards over the step's samples (mean 0, std 1) before clipping
    reward_clip: float = 10.0  # clip rewards to [−c, c] (Assumption 4.4's bound R'); 0 = no clipping
    missing_eos_reward: float | None = None  # fixed reward for samples that did not finish (no EOS, no stop string) within max_new_tokens (e.g. −1, TL;DR practice); null = keep the scored value
    updates_per_sample: int = 1  # optimizer steps per batch of samples (u); > 1 uses the clipped ratio below
    ratio_clip: float = 0.2  # PPO clip ε of the importance ratio π/π_old when updates_per_sample > 1

    def __post_init__(self):
        super().__post_init__()
        positive(self, "beta", "reward_clip", strict=False)
        positive(self, "ratio_clip")
        if self.updates_per_sample < 1:
            raise ValueError(f"updates_per_sample={self.updates_per_sample}; must be >= 1")


class RLHF(Method):
    name = "rlhf"
    Config = RLHFConfig
    needs_reference = True
    needs_reward = True
    data_kind = "prompts"

    def __init__(self, cfg: RLHFConfig):
        super().__init__(cfg)
        self._reuse: list[dict] = []  # the samples of the current u-step cycle, one entry per micro-batch
        self._cycle_step, self._micro, self._seen_step = -1, 0, -1

    def bound(self, rewards: torch.Tensor, finished: torch.Tensor) -> torch.Tensor:
        """Raw scores (P, k) -> bounded rewards (Assumption 4.4): whiten, clip, a fixed score for
        samples that never finished (neither EOS nor a stop string within max_new_tokens)."""
        r = rewards.float()
        if self.cfg.reward_whiten:
            r = (r - r.mean()) / r.std().clamp(min=1e-6) if r.numel() > 1 else r - r.mean()
        if self.cfg.reward_clip > 0:
            r = r.clamp(-self.cfg.reward_clip, self.cfg.reward_clip)
        if self.cfg.missing_eos_reward is not None:
            r = torch.where(finished.to(r.device), r, torch.full_like(r, self.cfg.missing_eos_reward))
        return r

    def loss(self, batch: list[PromptExample], ctx: MethodContext):
        return self._loss(*self._samples(batch, ctx, train=True), ctx)

    @torch.no_grad()
    def evaluate(self, batch: list[PromptExample], ctx: MethodContext) -> dict[str, float]:
        return self._loss(*self._samples(batch, ctx, train=False), ctx)[1]

    def state_dict(self) -> dict:
        return {"reuse": self._reuse, "cycle_step": self._cycle_step} if self.cfg.updates_per_sample > 1 else {}

    def load_state_dict(self, state: dict) -> None:
        self._reuse = state.get("reuse", [])
        self._cycle_step = state.get("cycle_step", -1)

    # --------------------------------------------------------------------------------------------

    def _samples(self, batch: list[PromptExample], ctx: MethodContext, train: bool) -> tuple[dict, object]:
        """This micro-batch's prompts, samples and bounded rewards: fresh, or reused within a u-cycle;
        and, for fresh samples, the policy's prompt pass that drew them (the loss reuses it), else None."""
        u = self.cfg.updates_per_sample
        if train and u > 1:
            if ctx.step != self._seen_step:  # first micro-batch of an optimizer step
                self._seen_step, self._micro = ctx.step, 0
            reusing = self._cycle_step >= 0 and ctx.step - self._cycle_step < u and self._micro < len(self._reuse)
            if reusing:
                self._micro += 1
                return self._reuse[self._micro - 1], None  # drawn by older weights: no prompt pass to share
            if self._micro == 0:
                self._reuse, self._cycle_step = [], ctx.step
        prompts = [ex.prompt_ids for ex in batch]
        # the policy runs each prompt once, for sampling and the loss, where that pays for k samples
        pp = ctx.policy.prompt_pass(prompts, samples=(self.cfg.k, self.cfg.max_new_tokens))
        rollout = draw(ctx, prompts, self.cfg, pp)
        raw = scores(ctx, prompts, rollout)  # (P, k)
        entry = {
            "prompts": prompts, "responses": rollout.responses, "raw": raw.cpu(),
            "rewards": self.bound(raw, rollout.finished).cpu(), "old_logps": rollout.logps.cpu(),
            "sample": sample_metrics(rollout, rollout.logps, ref_logps=rollout.logps),  # its kl (0 here) is replaced in _loss
            "num_tokens": sample_tokens(prompts, rollout),
        }
        if train and u > 1:
            self._reuse.append(entry)
            self._micro += 1
        return entry, pp

    def _loss(self, s: dict, pp, ctx: MethodContext):
        cfg = self.cfg
        P, k = len(s["prompts"]), cfg.k
        pol = ctx.policy.logps(s["prompts"], s["responses"], temperature=cfg.temperature, prompt_pass=pp)
        policy = pol.logps.view(P, k)  # (P, k) log π_τ(y_i|x), with grad
        ref = ctx.reference.logps(s["prompts"], s["responses"], temperature=cfg.temperature).logps.float().view(P, k)
        rewards = s["rewards"].to(policy.device)  # (P, k) bounded
        reuse = cfg.updates_per_sample > 1
        old = s["old_logps"].to(policy.device) if reuse else None
        losses = rloo_policy_loss(policy, ref, rewards, cfg.beta, old_logps=old, clip=cfg.ratio_clip if reuse else None)  # (P,)
        loss = losses.mean()

        log_ratio = (policy - ref).detach()  # (P, k) log π/π_ref of each sample
        metrics = {
            "loss": loss.item(),
            "reward": s["raw"].mean().item(),  # the scorer's raw mean
            "reward/bounded": rewards.mean().item(),  # after whitening / clipping / the no-EOS score
            "reward/shaped": (rewards - cfg.beta * log_ratio).mean().item(),  # r - β log π/π_ref, what RLOO maximises
            **s["sample"],
            "kl": log_ratio.mean().item(),  # mean sequence KL(π‖π_ref) of the samples, under the current π
            "num_tokens": s["num_tokens"],
        }
        if reuse:
            ratio = torch.exp(policy.detach() - old)
            metrics["ratio/mean"] = ratio.mean().item()
            metrics["ratio/clipped_frac"] = ((ratio - 1).abs() > cfg.ratio_clip).float().mean().item()
        return loss, metrics
