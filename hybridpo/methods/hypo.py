"""HyPO, paper Algorithm 1: DPO on offline pairs + λ × a reverse-KL term on online samples.

Each step takes an offline minibatch of pairs (x, y+, y-) and, for the same prompts x, k unlabeled
samples y_1..y_k ~ π(·|x) (Alg. 1 line 4). The loss (line 5) is

    mean_B dpo_loss(x, y+, y-)  +  λ · mean_B hypo_kl_loss(y_1..y_k)

where hypo_kl_loss is the trajectory-level leave-one-out estimator with stop-gradient on
log π/π_ref (hybridpo.losses; its gradient is an unbiased estimate of ∇ KL(π‖π_ref), checked by
enumeration in tests/rollout/test_hypo_kl_gradient.py), plus α|y| in the cost when a length
penalty is set (the paper's chat setting). The chosen, rejected and k sampled responses of a
prompt share the prompt in ONE packed forward for π and one for π_ref (hybridpo.logprobs); the
policy's prompt pass is also the sampler's prefill (ctx.prompt_pass, where the context allows it).

Beyond the paper, `kl_budget > 0` turns λ into the dual variable of the constrained form (Eq. 6,
max DPO objective s.t. KL(π‖π_ref) ≤ budget): after each micro-batch,
    λ ← max(0, λ + η_λ (KL_measured − kl_budget))
with KL_measured the mean sequence KL of that micro-batch's samples. λ is part of the method's
state, so checkpoints and --resume carry it. Held-out evaluation never moves λ.

With λ = 0 (and no kl_budget) a step's weights equal a `dpo` step's to float precision
(tests/online): the samples are still drawn, so the KL of a DPO-like run is logged.

Deviations, stated: with temperature τ ≠ 1 the samples and their log-probs are those of π_τ (the
KL regularised is then KL(π_τ‖π_ref,τ)) and the samples need a second forward at τ; the paper
samples π itself (τ = 1, the default), where one forward serves pairs and samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hybridpo.data.examples import PreferenceExample
from hybridpo.losses import dpo_loss, hypo_kl_loss, sequence_kl
from hybridpo.methods.base import Method, MethodContext
from hybridpo.methods.dpo import pair_metrics
from hybridpo.methods.online import (
    SamplingArgs, check_sampling, draw, policy_logps, sample_metrics, sample_tokens, shared_prompt_pass,
)


@dataclass
class HyPOConfig(SamplingArgs):
    beta: float = 0.05  # β of the DPO term, Eq. 4 (paper TL;DR: 0.05)
    lam: float = 1e-4  # λ, weight of the online KL term (Alg. 1); the starting value when kl_budget > 0
    alpha: float = 0.0  # α, length penalty: the KL cost of a sample is log π/π_ref + α|y| (paper chat setting); 0 = off
    kl_budget: float = 0.0  # > 0: adapt λ by dual ascent to hold KL(π‖π_ref) at this many nats (Eq. 6); 0 = fixed λ
    lambda_lr: float = 0.01  # η_λ, dual-ascent step: λ moves by η_λ × (KL − kl_budget) per micro-batch
    lambda_max: float = 1e4  # upper bound on λ in kl_budget mode (keeps one bad estimate from exploding it)


class HyPO(Method):
    name = "hypo"
    Config = HyPOConfig
    needs_reference = True

    def __init__(self, cfg: HyPOConfig):
        super().__init__(cfg)
        check_sampling(cfg)
        if not cfg.beta > 0:
            raise ValueError(f"method_args.beta={cfg.beta}; must be > 0")
        for name in ("lam", "alpha", "kl_budget", "lambda_lr"):
            if getattr(cfg, name) < 0:
                raise ValueError(f"method_args.{name}={getattr(cfg, name)}; must be >= 0")
        self.lam = float(cfg.lam)  # the current λ (moves only in kl_budget mode)

    def loss(self, batch: list[PreferenceExample], ctx: MethodContext):
        return self._loss(batch, ctx, update_dual=True)

    @torch.no_grad()
    def evaluate(self, batch: list[PreferenceExample], ctx: MethodContext) -> dict[str, float]:
        return self._loss(batch, ctx, update_dual=False)[1]

    def state_dict(self) -> dict:
        return {"lambda": self.lam}

    def load_state_dict(self, state: dict) -> None:
        self.lam = float(state.get("lambda", self.cfg.lam))

    # --------------------------------------------------------------------------------------------

    def _loss(self, batch: list[PreferenceExample], ctx: MethodContext, update_dual: bool):
        cfg, B, k = self.cfg, len(batch), self.cfg.k
        prompts = [ex.prompt_ids for ex in batch]
        pp = shared_prompt_pass(ctx, prompts)  # the policy runs each prompt once, for sampling and the loss
        rollout = draw(ctx, prompts, cfg, pp)  # Alg. 1 line 4: y_1..y_k ~ π(·|x), no grad
        pairs = [[ex.chosen_ids, ex.rejected_ids] for ex in batch]
        if cfg.temperature == 1.0:  # one packed forward per model: prompt | y+ | y- | y_1 .. y_k
            both = [p + s for p, s in zip(pairs, rollout.responses)]
            pol = policy_logps(ctx, prompts, both, prompt_pass=pp)
            policy = pol.logps.view(B, 2 + k)  # (B, 2 + k)
            ref = ctx.ref_logps(prompts, both).logps.detach().float().view(B, 2 + k)
            lengths = pol.lengths.view(B, 2 + k)[:, 2:]  # (B, k)
        else:  # the pairs at τ = 1 (the DPO objective), the samples at the sampler's τ
            t = cfg.temperature
            pol_pairs = policy_logps(ctx, prompts, pairs, prompt_pass=pp)
            pol_samples = policy_logps(ctx, prompts, rollout.responses, temperature=t, prompt_pass=pp)
            policy = torch.cat([pol_pairs.logps.view(B, 2), pol_samples.logps.view(B, k)], dim=1)
            ref = torch.cat([
                ctx.ref_logps(prompts, pairs).logps.view(B, 2),
                ctx.ref_logps(prompts, rollout.responses, temperature=t).logps.view(B, k),
            ], dim=1).detach().float()
            lengths = pol_samples.lengths.view(B, k)

        pc, pr, rc, rr = policy[:, 0], policy[:, 1], ref[:, 0], ref[:, 1]
        offline = dpo_loss(pc, pr, rc, rr, cfg.beta)  # (B,) Eq. 4 on the offline pairs
        online = hypo_kl_loss(policy[:, 2:], ref[:, 2:], lengths, alpha=cfg.alpha)  # (B,) Alg. 1 line 5
        lam = self.lam  # the λ this step uses (logged), before the dual update below
        loss = offline.mean() + lam * online.mean()

        kl = sequence_kl(policy[:, 2:], ref[:, 2:]).mean().item()  # measured KL(π‖π_ref) on this step's samples
        if update_dual and cfg.kl_budget > 0:  # dual ascent on Eq. 6's constraint KL ≤ kl_budget
            self.lam = min(cfg.lambda_max, max(0.0, self.lam + cfg.lambda_lr * (kl - cfg.kl_budget)))

        metrics = {
            "loss": loss.item(),
            "loss/dpo": offline.mean().item(),
            "loss/kl_surrogate": online.mean().item(),  # the surrogate's value (its gradient is ∇KL, its value is not KL)
            **pair_metrics(policy[:, :2], ref[:, :2], cfg.beta),
            "lambda": lam,
            **sample_metrics(rollout, policy[:, 2:].detach(), ref[:, 2:]),
            "num_tokens": sample_tokens(prompts, rollout) + sum(len(c) + len(r) for c, r in pairs),
        }
        return loss, metrics
