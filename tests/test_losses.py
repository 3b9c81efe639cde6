"""Hand-derived values for every function of hybridpo.losses."""

import math

import pytest
import torch
from torch.testing import assert_close

from hybridpo import losses


def test_bradley_terry_equal_rewards_is_log2():
    r = torch.tensor([0.0, 3.0, -7.0], dtype=torch.float64)
    assert_close(losses.bradley_terry_loss(r, r), torch.full_like(r, math.log(2)))


def test_bradley_terry_value():
    # margin 1: -log σ(1) = log(1 + e^-1)
    out = losses.bradley_terry_loss(torch.tensor(2.0), torch.tensor(1.0))
    assert_close(out, torch.tensor(math.log1p(math.exp(-1.0))))


def test_dpo_equal_margins_is_log2_for_any_beta():
    z = torch.randn(4, 3, dtype=torch.float64)
    for beta in (0.01, 0.1, 5.0):
        assert_close(losses.dpo_loss(z, z, z, z, beta=beta), torch.full_like(z, math.log(2)))


def test_dpo_value_by_hand():
    # h = (-1 - -3) - (-4 - -2) = 2 - (-2) = 4; β = 0.5 -> -log σ(2) = log(1 + e^-2)
    pc, pr, rc, rr = map(torch.tensor, (-1.0, -4.0, -3.0, -2.0))
    assert_close(losses.dpo_logits(pc, pr, rc, rr), torch.tensor(4.0))
    assert_close(losses.dpo_loss(pc, pr, rc, rr, beta=0.5), torch.tensor(math.log1p(math.exp(-2.0))))


def test_dpo_gradient_pushes_chosen_up_and_rejected_down():
    pc = torch.tensor(-2.0, requires_grad=True)
    pr = torch.tensor(-2.0, requires_grad=True)
    losses.dpo_loss(pc, pr, torch.tensor(-2.0), torch.tensor(-2.0), beta=0.1).backward()
    # d/dpc of -log σ(β h) at h = 0 is -β σ(0) = -β/2
    assert_close(pc.grad, torch.tensor(-0.05))
    assert_close(pr.grad, torch.tensor(0.05))


def test_ipo_is_zero_at_its_fixed_point():
    beta = 0.25  # fixed point h = 1/(2β) = 2
    pc, pr = torch.tensor(0.0), torch.tensor(-2.0)
    assert_close(losses.ipo_loss(pc, pr, torch.tensor(0.0), torch.tensor(0.0), beta), torch.tensor(0.0))
    # h = 0 -> (0 - 2)² = 4
    assert_close(losses.ipo_loss(pc, pc, pc, pc, beta), torch.tensor(4.0))


def test_losses_keep_dtype_and_shape():
    for dtype in (torch.float64, torch.float32, torch.bfloat16):
        z = torch.zeros(2, 5, dtype=dtype)
        for fn in (losses.dpo_loss, losses.ipo_loss):
            out = fn(z, z, z, z, 0.1)
            assert out.dtype == dtype and out.shape == (2, 5)


def test_implicit_rewards_are_beta_log_ratios_without_grad():
    p = torch.tensor([-1.0, -2.0], requires_grad=True)
    out = losses.implicit_rewards(p, torch.tensor([-2.0, -2.0]), beta=0.1)
    assert_close(out, torch.tensor([0.1, 0.0]))
    assert not out.requires_grad


def test_leave_one_out_advantages_by_hand():
    # k = 3, r = (3, 0, 0): baselines (0, 1.5, 1.5) -> (3, -1.5, -1.5); they sum to zero
    adv = losses.leave_one_out_advantages(torch.tensor([[3.0, 0.0, 0.0]]))
    assert_close(adv, torch.tensor([[3.0, -1.5, -1.5]]))
    with pytest.raises(ValueError, match="k >= 2"):
        losses.leave_one_out_advantages(torch.zeros(4, 1))


def test_hypo_kl_loss_gradient_by_hand():
    # k = 2: c = (1, -1) -> advantages (2, -2); Alg. 1 sums over the samples: loss = 2 lp1 - 2 lp2
    # -> grads (2, -2); reduction="mean" halves them -> (1, -1)
    ref = torch.tensor([-0.5, -0.5])
    for reduction, expected in (("sum", [2.0, -2.0]), ("mean", [1.0, -1.0])):
        policy = torch.tensor([0.5, -1.5], requires_grad=True)
        losses.hypo_kl_loss(policy, ref, reduction=reduction).backward()
        assert_close(policy.grad, torch.tensor(expected))
    with pytest.raises(ValueError, match="reduction"):
        losses.hypo_kl_loss(policy, ref, reduction="none")


def test_hypo_kl_loss_length_penalty_adds_alpha_times_length():
    # equal log-ratios, lengths (10, 4), α = 0.5: c = (5, 2) -> advantages (3, -3), summed grads (3, -3)
    policy = torch.tensor([-1.0, -1.0], requires_grad=True)
    losses.hypo_kl_loss(policy, torch.tensor([-1.0, -1.0]), torch.tensor([10, 4]), alpha=0.5).backward()
    assert_close(policy.grad, torch.tensor([3.0, -3.0]))
    with pytest.raises(ValueError, match="lengths"):
        losses.hypo_kl_loss(policy, policy, alpha=0.5)


def test_hypo_kl_is_rloo_with_zero_reward_and_unit_beta():
    policy = torch.randn(3, 4, dtype=torch.float64)
    ref = torch.randn(3, 4, dtype=torch.float64)
    zero = torch.zeros_like(policy)
    # shaped reward -1·log-ratio: RLOO's loss -mean(A·lp) with A = -A_hypo is HyPO's mean(A_hypo·lp)
    assert_close(losses.hypo_kl_loss(policy, ref, reduction="mean"), losses.rloo_policy_loss(policy, ref, zero, beta=1.0))


def test_rloo_policy_loss_by_hand():
    # rewards (1, 0), β = 0 -> advantages (1, -1); loss = -mean(lp1 - lp2) -> grads (-0.5, 0.5)
    policy = torch.tensor([-1.0, -1.0], requires_grad=True)
    losses.rloo_policy_loss(policy, torch.tensor([-1.0, -1.0]), torch.tensor([1.0, 0.0]), beta=0.0).backward()
    assert_close(policy.grad, torch.tensor([-0.5, 0.5]))


def test_rloo_clipped_ratio_matches_plain_gradient_at_ratio_one_and_clips_beyond():
    rewards = torch.tensor([1.0, 0.0])
    ref = torch.zeros(2)
    a = torch.tensor([-1.0, -2.0], requires_grad=True)
    losses.rloo_policy_loss(a, ref, rewards, beta=0.0).backward()
    b = torch.tensor([-1.0, -2.0], requires_grad=True)
    losses.rloo_policy_loss(b, ref, rewards, beta=0.0, old_logps=b.detach(), clip=0.2).backward()
    assert_close(a.grad, b.grad)
    # ratio e^1 > 1.2 on a positive advantage: clipped, so no gradient on that sample
    c = torch.tensor([0.0, -2.0], requires_grad=True)
    losses.rloo_policy_loss(c, ref, rewards, beta=0.0, old_logps=torch.tensor([-1.0, -2.0]), clip=0.2).backward()
    assert c.grad[0] == 0.0


def test_sequence_kl_is_mean_log_ratio():
    # log-ratios (3, 1) per row: the mean is 2 (a sum gives 4, a flipped sign -2, a mean over the
    # wrong axis mixes the rows); the second row's (-1, 0) has mean -0.5
    policy = torch.tensor([[-1.0, -3.0], [-2.0, -1.0]])
    ref = torch.tensor([[-4.0, -4.0], [-1.0, -1.0]])
    assert_close(losses.sequence_kl(policy, ref), torch.tensor([2.0, -0.5]))
    assert not losses.sequence_kl(policy.requires_grad_(), ref).requires_grad


def test_kl_divergence_exact_values():
    log = lambda *p: torch.tensor(p, dtype=torch.float64).log()  # noqa: E731
    # KL((1/2,1/2)‖(1/4,3/4)) = ½ log 2 + ½ log(2/3)
    assert_close(losses.kl_divergence(log(0.5, 0.5), log(0.25, 0.75)),
                 torch.tensor(0.5 * math.log(2) + 0.5 * math.log(2 / 3), dtype=torch.float64))
    # zero mass where q has none costs nothing; mass where q has none is infinite
    assert losses.kl_divergence(log(1.0, 0.0), log(0.5, 0.5)).item() == pytest.approx(math.log(2))
    assert math.isinf(losses.kl_divergence(log(0.5, 0.5), log(1.0, 0.0)).item())


def test_kl_regularized_objective_optimum_is_the_gibbs_policy():
    # argmax_π E_π r - β KL(π‖π_ref) is π* ∝ π_ref exp(r/β), with value β log Σ π_ref exp(r/β)
    r = torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64)
    ref = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64).log()
    beta = 0.7
    opt = torch.log_softmax(ref + r / beta, dim=-1)
    value = losses.kl_regularized_objective(opt, ref, r, beta)
    assert_close(value, beta * torch.logsumexp(ref + r / beta, dim=-1))
    other = torch.log_softmax(torch.tensor([0.3, 0.1, 0.9], dtype=torch.float64), dim=-1)
    assert losses.kl_regularized_objective(other, ref, r, beta) < value
