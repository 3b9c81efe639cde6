"""Finite response sets ("bandits"): preference data, the KL-regularised optimum, exact optimisers.

Distributions over Y = {0, …, n-1} are held as log-probabilities on the last axis, with -inf
where a response has no mass (π_ref's partial support). No loss is written here: every
objective handed to the optimisers below is built from `hybridpo.losses` by the experiments.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

DTYPE = torch.float64  # the lab's precision everywhere


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def gibbs_logprobs(ref_logprobs: Tensor, rewards: Tensor, beta: float) -> Tensor:
    """argmax_π E_π[r] - β KL(π‖π_ref) = π_ref exp(r/β) / Z (paper §3, the RLHF optimum).   (..., n)

    Responses with π_ref = 0 keep log-prob -inf whatever their reward: RLHF cannot leave
    π_ref's support (the point of paper Prop. 4.1 vs Lemma 4.1).
    """
    logits = ref_logprobs + rewards / beta
    return logits - torch.logsumexp(logits, dim=-1, keepdim=True)


def bt_pairs(rewards: Tensor, support: Tensor, n_pairs: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """n_pairs preference pairs on the responses `support` (1-D index tensor), labelled by
    Bradley-Terry on `rewards` (n,): two distinct responses drawn uniformly, y+ ≻ y- with
    probability σ(r(y+) - r(y-)). Returns (chosen, rejected) index tensors (n_pairs,)."""
    m = len(support)
    a = torch.randint(0, m, (n_pairs,), generator=gen)
    b = (a + torch.randint(1, m, (n_pairs,), generator=gen)) % m  # b != a
    ya, yb = support[a], support[b]
    p_a = torch.sigmoid(rewards[ya] - rewards[yb])
    a_wins = torch.rand(n_pairs, generator=gen, dtype=DTYPE) < p_a
    return torch.where(a_wins, ya, yb), torch.where(a_wins, yb, ya)


def population_pairs(rewards: Tensor, mu: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Infinite data: every ordered pair (i, j), i != j, as (chosen=i, rejected=j) with weight
    μ(i) μ(j) σ(r_i - r_j) (y1, y2 ~ μ iid, Bradley-Terry label). Returns (chosen, rejected,
    weight), each (n(n-1),); the weights sum to P(y1 != y2)."""
    n = rewards.shape[-1]
    i, j = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    keep = i != j
    i, j = i[keep], j[keep]
    weight = mu[i] * mu[j] * torch.sigmoid(rewards[i] - rewards[j])
    return i, j, weight


def minimize(loss_fn: Callable[[], Tensor], params: list[Tensor], max_iter: int = 500, tol: float = 1e-12) -> float:
    """Exact optimisation for the small convex-ish problems of the lab: L-BFGS with strong-Wolfe
    line search, in float64, until the gradient's max-norm falls below `tol`. Returns that norm."""
    opt = torch.optim.LBFGS(
        params, lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=0.0,
        history_size=50, line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    opt.step(closure)
    opt.zero_grad()
    loss_fn().backward()
    norm = max(float(p.grad.abs().max()) for p in params)
    for p in params:
        p.grad = None
    return norm



def count_pairs(chosen: Tensor, rejected: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor]:
    """Collapse a sampled dataset into its distinct ordered pairs with weight = count / N, so a
    full-batch loss costs one term per distinct pair; `(weight * loss).sum()` is the mean loss."""
    counts = torch.bincount(chosen * n + rejected, minlength=n * n).to(DTYPE)
    keep = counts.nonzero().squeeze(-1)
    return keep // n, keep % n, counts[keep] / len(chosen)
