"""The preference-learning math, as pure tensor functions.

Paper: Song, Swamy, Singh, Bagnell, Sun, "The Importance of Online Data: Understanding Preference
Fine-tuning via Coverage" (arXiv 2406.01462), cited below as "the paper".

Conventions shared by every function here:
- `*_logps` are sequence log-probabilities log π(y|x) (sums of token log-probs), or, over a finite
  response set, log π(y). `policy_*` is the model being trained, `ref_*` is π_ref.
- Functions return one value per example (no reduction), keep the caller's dtype, and broadcast
  over any leading batch shape: the coverage lab calls them in float64 on tables, the trainer in
  float32/bf16 on LM batches.
- Nothing here knows about models, tokens, logging or devices.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def bradley_terry_loss(chosen_rewards: Tensor, rejected_rewards: Tensor) -> Tensor:
    """Reward-model loss, paper Eq. 3: -log σ(r(x, y+) - r(x, y-)).   (...), (...) -> (...)"""
    return -F.logsigmoid(chosen_rewards - rejected_rewards)


def dpo_logits(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
) -> Tensor:
    """h = log π(y+)/π_ref(y+) - log π(y-)/π_ref(y-), the quantity DPO and IPO act on."""
    return (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)


def dpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
) -> Tensor:
    """DPO, paper Eq. 4: -log σ(β h).   (...) x4 -> (...)

    Equal log-ratios (h = 0) give log 2 whatever β is.
    """
    h = dpo_logits(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return -F.logsigmoid(beta * h)


def ipo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    beta: float,
) -> Tensor:
    """IPO, the paper's Appendix B.1 form (Azar et al. 2023 with τ = β): (h - 1/(2β))².

    h is built from *sequence* log-probs, as in the paper and in Azar et al. Some libraries (TRL's
    `loss_type="ipo"`) instead feed per-token *averaged* log-probs (each sum divided by the
    response length), which changes h's scale with length and so the fixed point h = 1/(2β).
    That variant is a choice of the log-prob reduction, not of this loss: the trainer's
    `ipo_average_logps` option divides the log-probs before calling this function.
    """
    h = dpo_logits(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return (h - 1.0 / (2.0 * beta)) ** 2


def implicit_rewards(policy_logps: Tensor, ref_logps: Tensor, beta: float) -> Tensor:
    """DPO's implicit reward β log π(y)/π_ref(y) (TRL's `rewards/chosen`, `rewards/rejected`)."""
    return beta * (policy_logps - ref_logps).detach()


def leave_one_out_advantages(rewards: Tensor) -> Tensor:
    """RLOO advantages over the last axis of k samples: r_i - mean_{j≠i} r_j.   (..., k) -> (..., k)

    The leave-one-out baseline does not depend on sample i, so the REINFORCE estimate stays
    unbiased (Kool et al. 2019; Ahmadian et al. 2024).
    """
    k = rewards.shape[-1]
    if k < 2:
        raise ValueError(f"leave-one-out needs k >= 2 samples per prompt, got k={k}")
    baseline = (rewards.sum(dim=-1, keepdim=True) - rewards) / (k - 1)
    return rewards - baseline


def rloo_policy_loss(
    policy_logps: Tensor,
    ref_logps: Tensor,
    rewards: Tensor,
    beta: float,
    old_logps: Tensor | None = None,
    clip: float | None = None,
) -> Tensor:
    """RLHF's KL-regularised objective max E_π[r] - β KL(π‖π_ref) (paper §3), as an RLOO surrogate.

    Shapes (..., k): k samples of one prompt on the last axis; returns (...).
    The KL is folded into the reward, r_i - β sg(log π(y_i)/π_ref(y_i)), and the loss is
    -mean_i A_i log π(y_i) with leave-one-out advantages A_i; its gradient is an unbiased estimate
    of -∇[E_π r - β KL(π‖π_ref)] (the ∇ of the KL's own log π has zero mean under π).
    With `old_logps` (the sampler's log-probs) the update may reuse samples: the surrogate becomes
    PPO's clipped ratio min(ρA, clip(ρ, 1±clip)A), ρ = π/π_old, which equals the plain form's
    gradient at ρ = 1.
    """
    shaped = rewards - beta * (policy_logps - ref_logps).detach()
    advantages = leave_one_out_advantages(shaped)
    if old_logps is None:
        return -(advantages * policy_logps).mean(dim=-1)
    ratio = torch.exp(policy_logps - old_logps.detach())
    unclipped = ratio * advantages
    if clip is None:
        return -unclipped.mean(dim=-1)
    clipped = ratio.clamp(1.0 - clip, 1.0 + clip) * advantages
    return -torch.minimum(unclipped, clipped).mean(dim=-1)


def hypo_kl_loss(
    policy_logps: Tensor,
    ref_logps: Tensor,
    lengths: Tensor | None = None,
    alpha: float = 0.0,
    reduction: str = "sum",
) -> Tensor:
    """HyPO's online regulariser ℓ_kl, paper Alg. 1 line 5, as an RLOO surrogate for ∇ KL(π‖π_ref).

    Shapes (..., k): k unlabeled samples y_i ~ π(·|x) of one prompt on the last axis; returns (...).
    Trajectory-level, stop-gradient on the log-ratio: c_i = sg(log π(y_i)/π_ref(y_i)) [+ α|y_i|],
    loss = Σ_i (c_i - mean_{j≠i} c_j) log π(y_i) (RLOO with k samples, Appendix D.2.1). Its gradient
    is an unbiased estimate of k ∇ KL(π‖π_ref) (+ α ∇ E_π|y| with the length penalty of the paper's
    chat setting); its *value* is not the KL (use `sequence_kl` for that).

    `reduction`: "sum" over the k samples, as Alg. 1 line 5 sums ℓ_kl over every online sample
    while ℓ_dpo sums over the offline pairs (so per pair, the KL term weighs k samples: the
    paper's λ values, 1e-4 in Table 6 and 2e-4 in Table 8, are for this form); "mean" divides by k
    (the gradient estimates ∇ KL itself, so λ weighs the KL independently of k). The leave-one-out
    baseline is a choice of the estimator: Alg. 1 writes the plain score-function form
    Σ log π(y) sg(log π/π_ref), which has the same expected gradient and more variance.
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction={reduction!r}; choose from ['sum', 'mean']")
    cost = (policy_logps - ref_logps).detach()
    if alpha:
        if lengths is None:
            raise ValueError("hypo_kl_loss: alpha > 0 needs the response lengths |y|")
        cost = cost + alpha * lengths.to(cost.dtype)
    terms = leave_one_out_advantages(cost) * policy_logps  # (..., k)
    return terms.sum(dim=-1) if reduction == "sum" else terms.mean(dim=-1)


def sequence_kl(policy_logps: Tensor, ref_logps: Tensor) -> Tensor:
    """Monte-Carlo reverse KL(π‖π_ref) from samples y ~ π: mean over the last axis of log π/π_ref.

    (..., k) -> (...). Unbiased when the y are drawn from π with the same temperature and mask
    the log-probs were computed with.
    """
    return (policy_logps - ref_logps).detach().mean(dim=-1)


def kl_divergence(p_logprobs: Tensor, q_logprobs: Tensor) -> Tensor:
    """Exact KL(p‖q) over a finite set on the last axis, from log-probabilities.   (..., n) -> (...)

    0·log(0/q) = 0 (responses p never produces cost nothing); p > 0 where q = 0 gives +inf: the
    reverse KL of a policy that leaves π_ref's support (paper Prop. 4.1).
    """
    p = p_logprobs.exp()
    terms = torch.where(p > 0, p * (p_logprobs - q_logprobs), torch.zeros_like(p))
    return terms.sum(dim=-1)


def kl_regularized_objective(
    policy_logprobs: Tensor, ref_logprobs: Tensor, rewards: Tensor, beta: float
) -> Tensor:
    """Exact J_β(π) = E_{y~π}[r(y)] - β KL(π‖π_ref) over a finite response set (paper §3).

    (..., n) x3 -> (...). -inf when π puts mass where π_ref has none.
    """
    p = policy_logprobs.exp()
    return (p * rewards).sum(dim=-1) - beta * kl_divergence(policy_logprobs, ref_logprobs)
