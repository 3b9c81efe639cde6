"""isomorphic-equivalence: lecture §22.4. When do DPO and two-stage RLHF return the same policy?

Tabular policies and tabular rewards are isomorphic through r = β log π/π_ref (+ const) when π_ref
has full support, so with full data coverage the DPO minimiser and the RLHF policy
π_ref exp(r̂/β)/Z coincide. Data are infinite (population pairs y1, y2 ~ μ, Bradley-Terry labels);
both problems are solved exactly with L-BFGS in float64 (DPO: losses.dpo_loss over the policy's
logits; RLHF: losses.bradley_terry_loss over a tabular reward, then the Gibbs policy).

Partial coverage, three views:
- μ misses responses π_ref covers: neither solution is unique any more (DPO never sees the uncovered
  logits, BT never sees the uncovered rewards); gradient methods from π_ref / r̂ = 0 stay in the
  span of the gradients and happen to pick the same member. The DPO solution set itself is wide:
  moving mass δ onto an uncovered response leaves the DPO loss unchanged.
- π_ref has no mass on the uncovered responses (Prop. 4.1's case) and the DPO policy can put mass
  there (logits start at uniform): RLHF keeps them at 0, DPO does not; we report by how much.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from hybridpo import losses
from hybridpo.lab import figures
from hybridpo.lab.bandit import DTYPE, generator, gibbs_logprobs, minimize, population_pairs
from hybridpo.lab.result import Claim, LabResult

NAME = "isomorphic-equivalence"
SECTION = "lecture §22.4"


@dataclass
class Config:
    n_responses: int = 8  # |Y|
    n_uncovered: int = 3  # responses μ never shows in the partial-coverage cases (the last ones)
    n_instances: int = 20  # random (π_ref, μ, r*) instances per case
    reward_range: float = 2.0  # r* ~ U(-range, range)
    beta: float = 0.5  # KL strength β
    delta: float = 0.5  # mass moved onto an uncovered response in the solution-set check


def _dirichlet(n: int, gen: torch.Generator) -> Tensor:
    x = -torch.log(torch.rand(n, generator=gen, dtype=DTYPE))
    return x / x.sum()


def _solve(ref_logp: Tensor, mu: Tensor, r_star: Tensor, beta: float, dpo_init: Tensor) -> dict:
    """Exact DPO policy (logits from dpo_init) and exact RLHF policy (r̂ from 0) on population pairs."""
    chosen, rejected, weight = population_pairs(r_star, mu)
    keep = weight > 0
    chosen, rejected, weight = chosen[keep], rejected[keep], weight[keep]
    theta = dpo_init.clone().requires_grad_()

    def dpo() -> Tensor:
        logp = torch.log_softmax(theta, -1)
        return (weight * losses.dpo_loss(logp[chosen], logp[rejected], ref_logp[chosen], ref_logp[rejected], beta)).sum()

    minimize(dpo, [theta])
    r_hat = torch.zeros_like(r_star, requires_grad=True)
    minimize(lambda: (weight * losses.bradley_terry_loss(r_hat[chosen], r_hat[rejected])).sum(), [r_hat])
    with torch.no_grad():
        rlhf = gibbs_logprobs(ref_logp, r_hat, beta)
        pairs = (chosen, rejected, weight)
        return {"dpo": torch.log_softmax(theta, -1), "rlhf": rlhf, "pairs": pairs, "r_hat": r_hat.detach(),
                "dpo_loss_at_rlhf": _dpo_loss(rlhf, ref_logp, pairs, beta)}


def _dpo_loss(logp: Tensor, ref_logp: Tensor, pairs, beta: float) -> float:
    """Population DPO loss Σ weight · losses.dpo_loss over the (chosen, rejected, weight) pairs."""
    c, r, w = pairs
    return float((w * losses.dpo_loss(logp[c], logp[r], ref_logp[c], ref_logp[r], beta)).sum())


def run(seed: int = 0, cfg: Config | None = None) -> LabResult:
    cfg = cfg or Config()
    gen = generator(seed)
    n, u = cfg.n_responses, cfg.n_uncovered
    rows: dict[str, list[float]] = {k: [] for k in (
        "full_max_diff", "partial_mu_max_diff", "solution_set_loss_gap", "solution_set_max_diff", "solution_set_J_gap",
        "partial_ref_max_diff", "partial_ref_dpo_outside_mass", "partial_ref_rlhf_outside_mass",
        "partial_ref_dpo_kl", "partial_ref_rlhf_kl")}
    for _ in range(cfg.n_instances):
        ref, mu = _dirichlet(n, gen), _dirichlet(n, gen)
        r_star = (2 * torch.rand(n, generator=gen, dtype=DTYPE) - 1) * cfg.reward_range
        ref_logp = torch.log(ref)
        # full coverage: π_ref and μ have full support
        full = _solve(ref_logp, mu, r_star, cfg.beta, ref_logp)
        rows["full_max_diff"].append(float((full["dpo"].exp() - full["rlhf"].exp()).abs().max()))
        # μ misses the last u responses; π_ref still covers them; DPO starts at π_ref
        mu_part = mu.clone()
        mu_part[n - u:] = 0
        mu_part /= mu_part.sum()
        part = _solve(ref_logp, mu_part, r_star, cfg.beta, ref_logp)
        rows["partial_mu_max_diff"].append(float((part["dpo"].exp() - part["rlhf"].exp()).abs().max()))
        moved = (1 - cfg.delta) * part["rlhf"].exp()
        target = n - u + int(part["rlhf"][n - u:].argmin())  # the least likely uncovered response
        moved[target] += cfg.delta
        rows["solution_set_loss_gap"].append(
            abs(_dpo_loss(moved.log(), ref_logp, part["pairs"], cfg.beta) - part["dpo_loss_at_rlhf"]))
        rows["solution_set_max_diff"].append(float((moved - part["rlhf"].exp()).abs().max()))
        rows["solution_set_J_gap"].append(float(  # J_r̂(moved) - J_r̂(π_rlhf): RLHF's objective tells them apart
            losses.kl_regularized_objective(moved.log(), ref_logp, part["r_hat"], cfg.beta)
            - losses.kl_regularized_objective(part["rlhf"], ref_logp, part["r_hat"], cfg.beta)))
        # π_ref has no mass on the uncovered responses; DPO's logits start at uniform
        ref_part = ref.clone()
        ref_part[n - u:] = 0
        ref_part_logp = torch.log(ref_part / ref_part.sum())
        zero_ref = _solve(ref_part_logp, mu_part, r_star, cfg.beta, torch.zeros(n, dtype=DTYPE))
        rows["partial_ref_max_diff"].append(float((zero_ref["dpo"].exp() - zero_ref["rlhf"].exp()).abs().max()))
        rows["partial_ref_dpo_outside_mass"].append(float(zero_ref["dpo"].exp()[n - u:].sum()))
        rows["partial_ref_rlhf_outside_mass"].append(float(zero_ref["rlhf"].exp()[n - u:].sum()))
        rows["partial_ref_dpo_kl"].append(float(losses.kl_divergence(zero_ref["dpo"], ref_part_logp)))
        rows["partial_ref_rlhf_kl"].append(float(losses.kl_divergence(zero_ref["rlhf"], ref_part_logp)))

    claims = [
        Claim("full_coverage_equal", f"full coverage, {cfg.n_instances} instances: DPO and RLHF return the same policy "
              "(value: max |π_dpo - π_rlhf|)", max(rows["full_max_diff"]), "<", 1e-6),
        Claim("partial_mu_same_member", "μ partial, π_ref full support, both from π_ref / r̂ = 0: the optimisers "
              "still pick the same policy (value: max |Δπ|)", max(rows["partial_mu_max_diff"]), "<", 1e-6),
        Claim("partial_mu_dpo_solution_set_wide", f"μ partial: moving δ = {cfg.delta} of mass onto an uncovered "
              "response keeps the DPO loss at its minimum (value: max |Δ loss|)", max(rows["solution_set_loss_gap"]),
              "<", 1e-12),
        Claim("partial_mu_solution_set_rlhf_rejects", "... while RLHF's objective J_r̂ = E r̂ - β KL ranks that DPO "
              "minimiser strictly below π_rlhf (value: max over instances of J_r̂(moved) - J_r̂(π_rlhf))",
              max(rows["solution_set_J_gap"]), "<", 0.0),
        Claim("partial_ref_differ", "π_ref = 0 on the uncovered responses: DPO and RLHF differ "
              "(value: min over instances of max |π_dpo - π_rlhf|; mean and max in the series)",
              min(rows["partial_ref_max_diff"]), ">", 1e-3),
        Claim("partial_ref_rlhf_stays_in_support", "... RLHF puts no mass outside supp(π_ref) (value: max mass)",
              max(rows["partial_ref_rlhf_outside_mass"]), "==", 0.0),
        Claim("partial_ref_dpo_leaves_support", "... DPO does, so its reverse KL is infinite (value: min KL)",
              min(rows["partial_ref_dpo_kl"]), "==", math.inf),
    ]
    return LabResult(
        name=NAME, section=SECTION, seed=seed,
        settings={**asdict(cfg), "data": "population pairs y1, y2 ~ μ iid, BT labels",
                  "optimizer": "L-BFGS (strong Wolfe), float64, grad tol 1e-12",
                  "dpo_init": "log π_ref (full/partial μ), uniform logits (π_ref with zeros)",
                  "reward_init": "r̂ = 0"},
        series=rows, claims=claims,
    )


def plot(result: LabResult, path: Path) -> None:
    plt = figures.pyplot()
    s = result.series
    fig, ax = plt.subplots(figsize=(7, 4))
    labels = ["full coverage", "μ partial\n(optimiser's pick)", "μ partial\n(other DPO minimiser)", "π_ref = 0 off data"]
    data = [s["full_max_diff"], s["partial_mu_max_diff"], s["solution_set_max_diff"], s["partial_ref_max_diff"]]
    for k, vals in enumerate(data):
        ax.semilogy([k] * len(vals), [max(v, 1e-17) for v in vals], "o", alpha=0.6)
    ax.axhline(1e-6, color="grey", ls="--", lw=0.8, label="1e-6")
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylabel("max_y |π_dpo(y) - π_rlhf(y)|")
    ax.set_title("DPO vs two-stage RLHF, exact tabular solutions")
    ax.legend(fontsize=8)
    figures.save(fig, path)
