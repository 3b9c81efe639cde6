"""partial-coverage: paper Prop. 4.1 (DPO), Prop. B.1 (IPO), Lemma 4.1 (RLHF), lecture §22.3.

Y = {y1, y2, y3}, π_ref = (½, ½, 0), preference data only on (y1, y2). Offline losses see only the
log-ratio difference on the data, so a policy can reach their exact minimum while putting mass δ
on y3, where π_ref has none: reverse KL = ∞ and J = -∞. RLHF's optimum π_ref exp(r̂/β)/Z keeps
π(y3) = 0 for any bounded reward model, with KL ≤ 2R'/β (Lemma 4.1); HyPO's online KL term makes
any mass on y3 infinitely costly, so its solution has finite KL.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from hybridpo import losses
from hybridpo.lab import figures
from hybridpo.lab.bandit import DTYPE, generator, gibbs_logprobs, minimize
from hybridpo.lab.result import Claim, LabResult

NAME = "partial-coverage"
SECTION = "Prop. 4.1, Prop. B.1, Lemma 4.1; lecture §22.3"


@dataclass
class Config:
    beta: float = 0.5  # KL strength β of DPO / IPO / RLHF / HyPO
    r_star: tuple[float, float, float] = (1.0, 0.0, 0.5)  # true bounded reward r*; labels y1 ≻ y2 w.p. σ(r*1 - r*2)
    deltas: tuple[float, ...] = (0.0, 0.01, 0.1, 0.5)  # mass the constructed DPO / IPO policies put on y3
    r_hat: tuple[float, float, float] = (1.0, 0.0, 10.0)  # the lecture's bounded reward model, ‖r̂‖∞ = R' = 10
    hypo_lambda: float = 1.0  # weight of HyPO's KL term
    grid_betas: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)  # β grid of the Lemma 4.1 check
    grid_bounds: tuple[float, ...] = (0.1, 1.0, 10.0, 100.0)  # R' grid of the Lemma 4.1 check
    grid_draws: int = 20  # random reward models per (β, R') cell, on random partial-support π_ref
    grid_n: int = 10  # responses of the random Lemma 4.1 instances
    grid_zeros: int = 3  # of which π_ref gives this many no mass


def _offline_population_loss(logp: Tensor, ref: Tensor, p12: float, beta: float, loss) -> Tensor:
    """E over the data's labels of `loss` (losses.dpo_loss or losses.ipo_loss) on the pair (y1, y2)."""
    forward = loss(logp[..., 0], logp[..., 1], ref[..., 0], ref[..., 1], beta)  # y1 chosen
    backward = loss(logp[..., 1], logp[..., 0], ref[..., 1], ref[..., 0], beta)  # y2 chosen
    return p12 * forward + (1.0 - p12) * backward


def _constructed_policy(log_ratio_12: float, delta: float) -> Tensor:
    """The proof's policy: π(y1)/π(y2) = exp(log_ratio_12) (π_ref(y1) = π_ref(y2)), π(y3) = δ."""
    p1 = (1.0 - delta) * torch.sigmoid(torch.tensor(log_ratio_12, dtype=DTYPE))
    probs = torch.stack([p1, (1.0 - delta) - p1, torch.tensor(delta, dtype=DTYPE)])
    return torch.log(probs)  # log 0 = -inf for δ = 0


def _lemma_grid(cfg: Config, seed: int) -> dict[str, list[float]]:
    """KL(π̂‖π_ref) of the RLHF optimum against 2R'/β, and π̂'s mass outside supp(π_ref)."""
    gen = generator(seed)
    rows: dict[str, list[float]] = {"beta": [], "r_bound": [], "kl": [], "bound": [], "span_bound": [], "mass_outside": []}
    for beta in cfg.grid_betas:
        for r_bound in cfg.grid_bounds:
            for _ in range(cfg.grid_draws):
                ref = -torch.log(torch.rand(cfg.grid_n, generator=gen, dtype=DTYPE))  # Dirichlet(1) up to scale
                zeros = torch.randperm(cfg.grid_n, generator=gen)[: cfg.grid_zeros]
                ref[zeros] = 0.0
                ref_logp = torch.log(ref / ref.sum())
                r_hat = (2 * torch.rand(cfg.grid_n, generator=gen, dtype=DTYPE) - 1) * r_bound
                logp = gibbs_logprobs(ref_logp, r_hat, beta)
                rows["beta"].append(beta)
                rows["r_bound"].append(r_bound)
                rows["kl"].append(float(losses.kl_divergence(logp, ref_logp)))
                rows["bound"].append(2 * r_bound / beta)
                rows["span_bound"].append(float(r_hat.max() - r_hat.min()) / beta)
                rows["mass_outside"].append(float(logp.exp()[zeros].sum()))
    return rows


def run(seed: int = 0, cfg: Config | None = None) -> LabResult:
    cfg = cfg or Config()
    beta, r_star = cfg.beta, torch.tensor(cfg.r_star, dtype=DTYPE)
    ref = torch.log(torch.tensor([0.5, 0.5, 0.0], dtype=DTYPE))
    p12 = float(torch.sigmoid(r_star[0] - r_star[1]))
    entropy = -(p12 * math.log(p12) + (1 - p12) * math.log(1 - p12))  # min of the DPO population loss

    # DPO (Prop. 4.1): β h = r*1 - r*2 minimises E[-log σ(β h)] (value: the label entropy).
    # IPO (Prop. B.1): E[(h ∓ 1/(2β))²] is minimised at h = (2 p12 - 1)/(2β), value 1/β² p12 (1 - p12).
    targets = {
        "dpo": (losses.dpo_loss, float(r_star[0] - r_star[1]) / beta, entropy),
        "ipo": (losses.ipo_loss, (2 * p12 - 1) / (2 * beta), p12 * (1 - p12) / beta**2),
    }
    offline: dict[str, dict[str, list[float]]] = {}
    for name, (loss, log_ratio, minimum) in targets.items():
        rows: dict[str, list[float]] = {"delta": [], "loss_gap": [], "pi_y3": [], "kl": [], "J": []}
        for delta in cfg.deltas:
            logp = _constructed_policy(log_ratio, delta)
            rows["delta"].append(delta)
            rows["loss_gap"].append(float(_offline_population_loss(logp, ref, p12, beta, loss)) - minimum)
            rows["pi_y3"].append(float(logp.exp()[2]))
            rows["kl"].append(float(losses.kl_divergence(logp, ref)))
            rows["J"].append(float(losses.kl_regularized_objective(logp, ref, r_star, beta)))
        offline[name] = rows

    # RLHF with the lecture's reward model r̂ = [1, 0, 10]: the Gibbs optimum.
    r_hat = torch.tensor(cfg.r_hat, dtype=DTYPE)
    rlhf = gibbs_logprobs(ref, r_hat, beta)
    rlhf_kl = float(losses.kl_divergence(rlhf, ref))
    r_prime = float(r_hat.abs().max())
    grid = _lemma_grid(cfg, seed)
    # The Gibbs policy is the maximiser: no policy on supp(π_ref) nearby scores higher.
    gen = generator(seed + 1)
    j_rlhf = losses.kl_regularized_objective(rlhf, ref, r_hat, beta)
    support_logits = rlhf[:2] + 0.3 * torch.randn(200, 2, generator=gen, dtype=DTYPE)
    perturbed = torch.cat([torch.log_softmax(support_logits, -1), torch.full((200, 1), -math.inf, dtype=DTYPE)], -1)
    gibbs_gap = float((losses.kl_regularized_objective(perturbed, ref, r_hat, beta) - j_rlhf).max())

    # HyPO: DPO population loss + λ KL(π‖π_ref). Any π(y3) > 0 makes the KL infinite, so the
    # minimiser lives on supp(π_ref) = {y1, y2}; we optimise exactly there (autograd on the exact
    # KL of losses.kl_divergence; a -inf logit would give 0·∞ = nan gradients).
    theta = torch.zeros(2, dtype=DTYPE, requires_grad=True)

    def hypo_objective() -> Tensor:
        logp = torch.log_softmax(theta, -1)
        dpo = _offline_population_loss(logp, ref[:2], p12, beta, losses.dpo_loss)
        return dpo + cfg.hypo_lambda * losses.kl_divergence(logp, ref[:2])

    minimize(hypo_objective, [theta])
    with torch.no_grad():
        hypo = torch.cat([torch.log_softmax(theta, -1), torch.tensor([-math.inf], dtype=DTYPE)])
    hypo_kl = float(losses.kl_divergence(hypo, ref))
    dpo_with_mass = _constructed_policy(targets["dpo"][1], 0.1)
    hypo_on_dpo = float(
        _offline_population_loss(dpo_with_mass, ref, p12, beta, losses.dpo_loss)
        + cfg.hypo_lambda * losses.kl_divergence(dpo_with_mass, ref)
    )

    def positive(rows: dict[str, list[float]], key: str) -> list[float]:
        return [v for d, v in zip(rows["delta"], rows[key]) if d > 0]

    claims = []
    for name, label in (("dpo", "DPO (Prop. 4.1)"), ("ipo", "IPO (Prop. B.1)")):
        rows = offline[name]
        claims += [
            Claim(f"{name}_reaches_minimum_with_mass_on_y3",
                  f"{label}: every constructed policy, with π(y3) = δ ∈ {list(cfg.deltas)}, attains the exact "
                  "minimum of the population loss (Assumption 4.3 with ε = 0); value: max |loss - min|",
                  max(abs(g) for g in rows["loss_gap"]), "<", 1e-12),
            Claim(f"{name}_kl_infinite",
                  f"{label}: reverse KL(π‖π_ref) = ∞ (and J = -∞) for every δ > 0; value: smallest such KL",
                  min(positive(rows, "kl")), "==", math.inf),
            Claim(f"{name}_J_minus_infinity", f"{label}: J(π) = -∞ for every δ > 0; value: largest such J",
                  max(positive(rows, "J")), "==", -math.inf),
        ]
    ratios = [k / b for k, b in zip(grid["kl"], grid["bound"])]
    claims += [
        Claim("rlhf_keeps_y3_at_zero", "RLHF with r̂ = [1, 0, 10] keeps π(y3) = 0 (value: π(y3))",
              float(rlhf.exp()[2]), "==", 0.0),
        Claim("rlhf_lecture_kl_bound", "RLHF with r̂ = [1, 0, 10]: KL(π‖π_ref) ≤ 2R'/β (value: KL / (2R'/β))",
              rlhf_kl / (2 * r_prime / beta), "<=", 1.0),
        Claim("lemma_4_1_grid", f"Lemma 4.1 over {len(ratios)} random reward models on a β × R' grid: "
              "max KL / (2R'/β) ≤ 1", max(ratios), "<=", 1.0),
        Claim("lemma_4_1_span_form", "tighter form used in the proof: KL ≤ (max r̂ - min r̂)/β; value: max ratio",
              max(k / s for k, s in zip(grid["kl"], grid["span_bound"])), "<=", 1.0),
        Claim("rlhf_grid_no_mass_outside_support", "RLHF puts no mass where π_ref has none, on every grid instance",
              max(grid["mass_outside"]), "==", 0.0),
        Claim("gibbs_is_the_maximiser", "π_ref exp(r̂/β)/Z beats 200 perturbed policies on J (value: best gain)",
              gibbs_gap, "<=", 0.0),
        Claim("hypo_kl_finite", "HyPO's policy has finite KL, at most log 2 (the largest KL on a 2-point "
              "support with uniform π_ref)", hypo_kl, "<=", math.log(2)),
        Claim("hypo_rejects_dpo_policy", "HyPO's objective is +∞ on the DPO policy with δ = 0.1", hypo_on_dpo, "==", math.inf),
    ]
    return LabResult(
        name=NAME, section=SECTION, seed=seed,
        settings={**asdict(cfg), "pi_ref": [0.5, 0.5, 0.0], "data": "population (infinite) pairs on (y1, y2)",
                  "hypo_kl": "exact KL via losses.kl_divergence, minimised with L-BFGS on supp(π_ref)",
                  "lemma_bound_constant": "KL(π̂‖π_ref) ≤ (E_π̂ r̂ - E_π_ref r̂)/β ≤ 2‖r̂‖∞/β"},
        series={"dpo": offline["dpo"], "ipo": offline["ipo"],
                "rlhf_probs": rlhf.exp().tolist(), "rlhf_kl": rlhf_kl,
                "hypo_probs": hypo.exp().tolist(), "hypo_kl": hypo_kl,
                "dpo_probs_delta_0.1": dpo_with_mass.exp().tolist(),
                "ipo_probs_delta_0.1": _constructed_policy(targets["ipo"][1], 0.1).exp().tolist(),
                "lemma_grid": grid},
        claims=claims,
    )


def plot(result: LabResult, path: Path) -> None:
    plt = figures.pyplot()
    s = result.series
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.2
    for k, (label, probs) in enumerate([("π_ref", [0.5, 0.5, 0.0]), ("DPO, δ=0.1", s["dpo_probs_delta_0.1"]),
                                        ("IPO, δ=0.1", s["ipo_probs_delta_0.1"]), ("RLHF r̂=[1,0,10]", s["rlhf_probs"]),
                                        ("HyPO", s["hypo_probs"])]):
        ax0.bar([i + (k - 2) * width * 0.8 for i in range(3)], probs, width * 0.8, label=label)
    ax0.set_xticks(range(3), ["y1", "y2", "y3 (π_ref = 0)"])
    ax0.set_ylabel("π(y)")
    ax0.set_title("DPO/IPO optima may leave supp(π_ref); RLHF/HyPO cannot")
    ax0.legend(fontsize=8)
    g = s["lemma_grid"]
    ax1.loglog(g["bound"], [max(k, 1e-12) for k in g["kl"]], ".", alpha=0.4, label="RLHF optimum, random r̂")
    lo, hi = min(g["bound"]), max(g["bound"])
    ax1.loglog([lo, hi], [lo, hi], "k--", label="KL = 2R'/β")
    ax1.set_xlabel("2R'/β")
    ax1.set_ylabel("KL(π̂‖π_ref)")
    ax1.set_title("Lemma 4.1: KL ≤ 2R'/β")
    ax1.legend(fontsize=8)
    figures.save(fig, path)
