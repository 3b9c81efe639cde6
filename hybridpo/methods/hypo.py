"""HyPO, paper Algorithm 1: DPO on offline pairs + λ × a reverse-KL term on online samples.

Each step takes an offline minibatch of pairs (x, y+, y-) and, for the same prompts x, k unlabeled
samples y_1..y_k ~ π(·|x) (Alg. 1 line 4). With both of Alg. 1's sums divided by the B pairs of
the minibatch, the loss (lines 3, 5, 6) is

    mean_B dpo_loss(x, y+, y-)  +  λ · mean_B Σ_{i=1..k} ℓ_kl(x, y_i)

where ℓ_kl is the trajectory-level leave-one-out (RLOO, Appendix D.2.1) estimator with
stop-gradient on log π/π_ref (hybridpo.losses.hypo_kl_loss; its gradient is an unbiased estimate
of k ∇ KL(π‖π_ref), checked by enumeration in tests/rollout/test_hypo_kl_gradient.py), plus α|y|
in the cost when a length penalty is set (the paper's chat setting, Appendix D.2.2). Alg. 1 sums
ℓ_kl over all online samples, so the paper's λ (1e-4 in Table 6, 2e-4 in Table 8) weighs k
samples per pair: `kl_reduction: sum` (the default) is that form; `kl_reduction: mean` divides by
k, so that the same λ weighs KL(π‖π_ref) itself whatever k is (λ_mean = k · λ_sum).

The chosen, rejected and k sampled responses of a prompt share the prompt in ONE packed forward
for π and one for π_ref; the policy's prompt pass is also the sampler's prefill
(ctx.policy.prompt_pass, where it gives the same numbers).

Beyond the paper, `kl_budget > 0` turns λ into the dual variable of the constrained form (Eq. 6,
max DPO objective s.t. KL(π‖π_ref) ≤ budget): after each optimizer step,
    λ ← min(λ_max, max(0, λ + η_λ (KL_measured − kl_budget)))
with KL_measured the step's mean sequence KL over all its micro-batches and processes (the loop's
`after_step` metrics), so every rank holds the same λ and grad_accum does not change the dual
step. λ is part of the method's state, so checkpoints and --resume carry it; it is logged as
`lam`, the name it has in the config. Held-out evaluation never moves λ.

With λ = 0 (and no kl_budget) a step's weights equal a `dpo` step's to float precision
(tests/online): the samples are still drawn, so the KL of a DPO-like run is logged.

Deviation, stated: with temperature τ ≠ 1 the samples and their log-probs are those of π_τ (the
KL regularised is then KL(π_τ‖π_ref,τ)) and the samples need a second forward at τ; the paper
samples π itself (τ = 1, the default), where one forward serves pairs and samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hybridpo.data.examples import PreferenceExample
from hybridpo.losses import dpo_loss, hypo_kl_loss
from hybridpo.methods.base import Method, MethodContext, positive
from hybridpo.methods.dpo import pair_metrics
from hybridpo.methods.online import SamplingArgs, draw, sample_metrics, sample_tokens

KL_REDUCTIONS = ("sum", "mean")


@dataclass
class HyPOConfig(SamplingArgs):
    beta: float = 0.05  # β of the DPO term, Eq. 4 (paper Tables 6, 8: 0.05)
    lam: float = 1e-4  # λ, weight of the online KL term (Alg. 1; paper Table 6: 1e-4, Table 8: 2e-4); the start value when kl_budget > 0
    kl_reduction: str = "sum"  # "sum": ℓ_kl summed over the k samples of a prompt, as Alg. 1 (the paper's λ); "mean": divided by k
    alpha: float = 0.0  # α, length penalty: the online cost of a sample is log π/π_ref + α|y| (paper Table 8: 0.02); 0 = off
    kl_budget: float = 0.0  # > 0: adapt λ by dual ascent to hold KL(π‖π_ref) at this many nats (Eq. 6); 0 = fixed λ
    lambda_lr: float = 0.01  # η_λ, dual-ascent step: λ moves by η_λ × (KL − kl_budget) per optimizer step
    lambda_max: float = 1e4  # upper bound on λ in kl_budget mode (keeps one bad estimate from exploding it)

    def __post_init__(self):
        super().__post_init__()
        positive(self, "beta")
        positive(self, "lam", "alpha", "kl_budget", "lambda_lr", strict=False)
        if self.kl_reduction not in KL_REDUCTIONS:
            raise ValueError(f"kl_reduction={self.kl_reduction!r}; choose from {list(KL_REDUCTIONS)}")


class HyPO(Method):
    name = "hypo"
    Config = HyPOConfig
    needs_reference = True

    def __init__(self, cfg: HyPOConfig):
        super().__init__(cfg)
        self.lam = float(cfg.lam)  # the current λ (moves only in kl_budget mode)

    def loss(self, batch: list[PreferenceExample], ctx: MethodContext):
        cfg, B, k = self.cfg, len(batch), self.cfg.k
        prompts = [ex.prompt_ids for ex in batch]
        pairs = [[ex.chosen_ids, ex.rejected_ids] for ex in batch]
        # the policy runs each prompt once, for sampling and the loss, where that pays for these lengths
        pp = ctx.policy.prompt_pass(prompts, responses=pairs, samples=(k, cfg.max_new_tokens))
        rollout = draw(ctx, prompts, cfg, pp)  # Alg. 1 line 4: y_1..y_k ~ π(·|x), no grad
        if cfg.temperature == 1.0:  # one packed forward per model: prompt | y+ | y- | y_1 .. y_k
            both = [p + s for p, s in zip(pairs, rollout.responses)]
            pol = ctx.policy.logps(prompts, both, prompt_pass=pp)
            policy = pol.logps.view(B, 2 + k)  # (B, 2 + k)
            ref = ctx.reference.logps(prompts, both).logps.float().view(B, 2 + k)
            lengths = pol.lengths.view(B, 2 + k)[:, 2:]  # (B, k)
        else:  # the pairs at τ = 1 (the DPO objective), the samples at the sampler's τ
            t = cfg.temperature
            pol_pairs = ctx.policy.logps(prompts, pairs, prompt_pass=pp)
            pol_samples = ctx.policy.logps(prompts, rollout.responses, temperature=t, prompt_pass=pp)
            policy = torch.cat([pol_pairs.logps.view(B, 2), pol_samples.logps.view(B, k)], dim=1)
            ref = torch.cat([
                ctx.reference.logps(prompts, pairs).logps.view(B, 2),
                ctx.reference.logps(prompts, rollout.responses, temperature=t).logps.view(B, k),
            ], dim=1).float()
            lengths = pol_samples.lengths.view(B, k)

        pc, pr, rc, rr = policy[:, 0], policy[:, 1], ref[:, 0], ref[:, 1]
        offline = dpo_loss(pc, pr, rc, rr, cfg.beta)  # (B,) Eq. 4 on the offline pairs (Alg. 1 line 3)
        online = hypo_kl_loss(policy[:, 2:], ref[:, 2:], lengths, alpha=cfg.alpha, reduction=cfg.kl_reduction)  # (B,) line 5
        loss = offline.mean() + self.lam * online.mean()  # line 6, both sums divided by B
        metrics = {
            "loss": loss.item(),
            "loss/dpo": offline.mean().item(),
            "loss/kl_surrogate": online.mean().item(),  # the surrogate's value (its gradient is ∇KL, its value is not KL)
            **pair_metrics(policy[:, :2], ref[:, :2], cfg.beta),
            "lam": self.lam,  # the λ this step used
            **sample_metrics(rollout, policy[:, 2:].detach(), ref[:, 2:]),
            "num_tokens": sample_tokens(prompts, rollout) + sum(len(c) + len(r) for c, r in pairs),
        }
        return loss, metrics

    def after_step(self, metrics: dict[str, float]) -> None:
        """Dual ascent on Eq. 6's constraint KL ≤ kl_budget, once per optimizer step, on the
        step's KL averaged over micro-batches and processes (identical on every rank)."""
        if self.cfg.kl_budget > 0:
            step = self.cfg.lambda_lr * (metrics["kl"] - self.cfg.kl_budget)
            self.lam = min(self.cfg.lambda_max, max(0.0, self.lam + step))

    def state_dict(self) -> dict:
        return {"lam": self.lam}

    def load_state_dict(self, state: dict) -> None:
        self.lam = float(state.get("lam", self.cfg.lam))
