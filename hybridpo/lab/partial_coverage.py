"""partial-coverage: paper Prop. 4.1 (DPO), Prop. B.1 (IPO), Lemma 4.1 (RLHF), lecture §22.3.

Y = {y1, y2, y3}, π_ref = (½, ½, 0), preference data only on (y1, y2). Offline losses see only the
log-ratio difference on the data, so a policy can reach their exact minimum while putting mass δ
on y3, where π_ref has none: reverse KL = ∞ and J = -∞. RLHF's optimum π_ref exp(r̂/β)/Z keeps
π(y3) = 0 for any bounded reward model, with KL ≤ 2R'/β (Lemma 4.1).

HyPO (DPO + λ KL(π‖π_ref), Eq. 7, with the exact KL of losses.kl_divergence) is optimised over
all three responses: a full softmax policy θ ∈ R³, which can put mass on y3 as DPO's
counterexample does, started both at uniform (1/3 on y3) and at the DPO construction with
δ = 0.5. With π_ref(y3) = 0 exactly its objective is +∞ at every θ (softmax mass on y3 is never
0), so we give y3 a small reference mass ε, π_ref = ((1-ε)/2, (1-ε)/2, ε), sweep ε → 0 and λ, and
compare with the exact minimiser. Write π = ((1-δ)a, (1-δ)(1-a), δ); the DPO term depends on a
only and KL(π‖π_ref) = (1-δ)K(a) + kl(δ‖ε) with K(a) = KL((a, 1-a)‖(½, ½)) ∈ [0, log 2], so for
every λ > 0 the best δ is the Gibbs weight
    δ*(a) = ε / (ε + (1-ε) e^{-K(a)})  ∈  [ε, 2ε/(1+ε)],
i.e. HyPO keeps π(y3) within a factor e^{K} ≤ 2 of π_ref(y3), and → 0 as ε → 0. λ = 0 (DPO) leaves δ
wherever the optimiser puts it: from uniform, θ3 never moves and δ = 1/(1 + 2 cosh(h/2)) with h the
DPO margin.
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
    hypo_lambda: float = 1.0  # weight of HyPO's KL term in the figure's bar and the +∞ check
    hypo_lambdas: tuple[float, ...] = (0.0, 0.01, 0.1, 1.0, 10.0, 100.0)  # the λ sweep (0 = plain DPO)
    hypo_eps: tuple[float, ...] = (1e-2, 1e-4, 1e-6)  # π_ref(y3) = ε in the sweep, towards the ε = 0 limit
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


def _k_half(a: float) -> float:
    """K(a) = KL((a, 1-a)‖(½, ½)), the in-support part of HyPO's KL."""
    return sum(x * math.log(2 * x) for x in (a, 1 - a) if x > 0)


def _hypo_sweep(cfg: Config, p12: float, dpo_log_ratio: float) -> dict[str, list[float]]:
    """HyPO's exact minimiser over θ ∈ R³ (all three responses) for every (ε, λ, start)."""
    rows: dict[str, list[float]] = {k: [] for k in ("eps", "lambda", "start", "pi_y3", "pi_y3_over_eps", "a", "kl",
                                                    "closed_form_pi_y3", "grad")}
    starts = {"uniform": torch.zeros(3, dtype=DTYPE), "dpo_delta_0.5": _constructed_policy(dpo_log_ratio, 0.5)}
    for eps in cfg.hypo_eps:
        ref = torch.log(torch.tensor([(1 - eps) / 2, (1 - eps) / 2, eps], dtype=DTYPE))
        for lam in cfg.hypo_lambdas:
            for k, (start, init) in enumerate(starts.items()):
                theta = init.clone().requires_grad_()

                def objective() -> Tensor:
                    logp = torch.log_softmax(theta, -1)
                    return (_offline_population_loss(logp, ref, p12, cfg.beta, losses.dpo_loss)
                            + lam * losses.kl_divergence(logp, ref))

                grad = minimize(objective, [theta])
                with torch.no_grad():
                    logp = torch.log_softmax(theta, -1)
                probs = logp.exp().tolist()
                a = probs[0] / (probs[0] + probs[1])
                rows["eps"].append(eps)
                rows["lambda"].append(lam)
                rows["start"].append(k)  # index into rows["starts"]: 0 uniform, 1 the DPO construction δ = 0.5
                rows["pi_y3"].append(probs[2])
                rows["pi_y3_over_eps"].append(probs[2] / eps)
                rows["a"].append(a)
                rows["kl"].append(float(losses.kl_divergence(logp, ref)))
                rows["closed_form_pi_y3"].append(eps / (eps + (1 - eps) * math.exp(-_k_half(a))))
                rows["grad"].append(grad)
    rows["starts"] = list(starts)
    return rows


def _hypo_claims(cfg: Config, h: dict[str, list[float]]) -> list[Claim]:
    idx = range(len(h["eps"]))
    pos = [i for i in idx if h["lambda"][i] > 0]
    dpo = [i for i in idx if h["lambda"][i] == 0 and h["start"][i] == 0]

    def at(i_eps: float, lam: float, start: int) -> int:
        return next(i for i in idx if (h["eps"][i], h["lambda"][i], h["start"][i]) == (i_eps, lam, start))

    lams = [lam for lam in cfg.hypo_lambdas if lam > 0]
    kl_increases = sum(h["kl"][at(e, b, s)] > h["kl"][at(e, a, s)] + 1e-12
                       for e in cfg.hypo_eps for s in (0, 1) for a, b in zip(lams, lams[1:]))
    return [
        Claim("hypo_y3_mass_is_the_gibbs_weight", "HyPO over all three responses, every λ > 0, ε and start: π(y3) "
              "is the exact minimiser δ*(a) = ε/(ε + (1-ε)e^{-K(a)}) (value: max |π(y3)/δ* - 1|)",
              max(abs(h["pi_y3"][i] / h["closed_form_pi_y3"][i] - 1) for i in pos), "<", 1e-4),
        Claim("hypo_y3_mass_at_most_twice_ref", "HyPO, every λ > 0 and ε: π(y3) ≤ 2ε/(1+ε), so it vanishes as "
              "π_ref(y3) = ε → 0 (value: max π(y3)(1+ε)/(2ε))",
              max(h["pi_y3"][i] * (1 + h["eps"][i]) / (2 * h["eps"][i]) for i in pos), "<=", 1.0),
        Claim("hypo_starts_agree", "HyPO from uniform and from the DPO construction with δ = 0.5 reaches the same "
              "policy (value: max |Δπ(y3)| / ε and |Δa| over the sweep)",
              max(max(abs(h["pi_y3_over_eps"][at(e, lam, 0)] - h["pi_y3_over_eps"][at(e, lam, 1)]),
                      abs(h["a"][at(e, lam, 0)] - h["a"][at(e, lam, 1)])) for e in cfg.hypo_eps for lam in lams),
              "<", 1e-4),
        Claim("hypo_kl_decreases_in_lambda", "HyPO's KL falls as λ grows, every ε and start (value: increases)",
              kl_increases, "==", 0),
        Claim("dpo_keeps_its_start_mass", "λ = 0 (DPO) from uniform keeps far more on y3: at least 10× HyPO's "
              "largest (value: min over ε of π_dpo(y3) / max_λ>0 π_hypo(y3))",
              min(h["pi_y3"][i] / max(h["pi_y3"][j] for j in pos if h["eps"][j] == h["eps"][i]) for i in dpo),
              ">", 10.0),
    ]


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
    # ... and every policy that puts mass on y3 scores J = -∞ (the reason its maximiser has π(y3) = 0)
    full_support = torch.log_softmax(3 * torch.randn(200, 3, generator=gen, dtype=DTYPE), -1)
    j_full_support = float(losses.kl_regularized_objective(full_support, ref, r_hat, beta).max())
    # RLHF when π_ref(y3) = ε > 0 instead: the Gibbs policy has full support, π(y3) = ε e^{r̂3/β}/Z
    rlhf_eps: dict[str, list[float]] = {"eps": [], "pi_y3": [], "kl": []}
    for eps in cfg.hypo_eps:
        ref_eps = torch.log(torch.tensor([(1 - eps) / 2, (1 - eps) / 2, eps], dtype=DTYPE))
        logp = gibbs_logprobs(ref_eps, r_hat, beta)
        rlhf_eps["eps"].append(eps)
        rlhf_eps["pi_y3"].append(float(logp.exp()[2]))
        rlhf_eps["kl"].append(float(losses.kl_divergence(logp, ref_eps)))

    hypo = _hypo_sweep(cfg, p12, targets["dpo"][1])
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
        Claim("rlhf_keeps_y3_at_zero", "RLHF with r̂ = [1, 0, 10]: every policy with π(y3) > 0 has J = -∞ "
              "(value: best J over 200 random full-support policies), so the maximiser keeps π(y3) = 0",
              j_full_support, "==", -math.inf),
        Claim("rlhf_eps_kl_bound", "π_ref(y3) = ε > 0, every ε of the sweep: RLHF's KL still obeys 2R'/β, "
              "though π(y3) = ε e^{R'/β}/Z is then far above ε (value: max KL / (2R'/β))",
              max(rlhf_eps["kl"]) / (2 * r_prime / beta), "<=", 1.0,
              note="the lecture's 'π̂_rlhf wouldn't generate ξ3' needs π_ref(ξ3) = 0 exactly; Lemma 4.1 bounds "
                   "the KL, not the mass"),
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
        Claim("hypo_rejects_dpo_policy", "π_ref(y3) = 0: HyPO's objective is +∞ on the DPO policy with δ = 0.1",
              hypo_on_dpo, "==", math.inf),
        *_hypo_claims(cfg, hypo),
    ]
    return LabResult(
        name=NAME, section=SECTION, seed=seed,
        settings={**asdict(cfg), "pi_ref": [0.5, 0.5, 0.0], "data": "population (infinite) pairs on (y1, y2)",
                  "hypo_kl": "exact KL via losses.kl_divergence; L-BFGS over all three logits, π_ref(y3) = ε",
                  "lemma_bound_constant": "KL(π̂‖π_ref) ≤ (E_π̂ r̂ - E_π_ref r̂)/β ≤ 2‖r̂‖∞/β"},
        series={"dpo": offline["dpo"], "ipo": offline["ipo"],
                "rlhf_probs": rlhf.exp().tolist(), "rlhf_kl": rlhf_kl,
                "hypo_sweep": hypo, "rlhf_eps": rlhf_eps,
                "dpo_probs_delta_0.1": dpo_with_mass.exp().tolist(),
                "ipo_probs_delta_0.1": _constructed_policy(targets["ipo"][1], 0.1).exp().tolist(),
                "lemma_grid": grid},
        claims=claims,
    )


def plot(result: LabResult, path: Path) -> None:
    plt = figures.pyplot()
    s = result.series
    h = s["hypo_sweep"]
    fig, (ax0, ax1, ax2) = plt.subplots(1, 3, figsize=(15, 4))
    width = 0.2
    eps_min = min(h["eps"])
    hypo = next(i for i in range(len(h["eps"])) if (h["eps"][i], h["lambda"][i], h["start"][i])
                == (eps_min, result.settings["hypo_lambda"], 1))
    a, d = h["a"][hypo], h["pi_y3"][hypo]
    for k, (label, probs) in enumerate([("π_ref", [0.5, 0.5, 0.0]), ("DPO, δ=0.1", s["dpo_probs_delta_0.1"]),
                                        ("IPO, δ=0.1", s["ipo_probs_delta_0.1"]), ("RLHF r̂=[1,0,10]", s["rlhf_probs"]),
                                        (f"HyPO λ={result.settings['hypo_lambda']:g}, π_ref(y3)={eps_min:g}",
                                         [(1 - d) * a, (1 - d) * (1 - a), d])]):
        ax0.bar([i + (k - 2) * width * 0.8 for i in range(3)], probs, width * 0.8, label=label)
    ax0.set_xticks(range(3), ["y1", "y2", "y3 (π_ref = 0)"])
    ax0.set_ylabel("π(y)")
    ax0.set_title("DPO/IPO optima may leave supp(π_ref); RLHF/HyPO do not", fontsize=10)
    ax0.legend(fontsize=8)
    lams = sorted({lam for lam in h["lambda"] if lam > 0})
    for k, eps in enumerate(sorted(set(h["eps"]), reverse=True)):
        rows = {h["lambda"][i]: i for i in range(len(h["eps"])) if h["eps"][i] == eps and h["start"][i] == 0}
        style = dict(color=f"C{k}", marker="os^"[k % 3], ms=9 - 3 * k, ls=("-", "--", ":")[k % 3],
                     label=f"ε = {eps:g}")
        ax1.semilogx(lams, [h["pi_y3_over_eps"][rows[lam]] for lam in lams], **style)
        ax2.loglog(lams, [max(h["kl"][rows[lam]], 1e-12) for lam in lams], **style)
        ax2.axhline(h["kl"][rows[0.0]], color=f"C{k}", ls=":", lw=1, label=f"DPO (λ = 0) from uniform, ε = {eps:g}")
    ax1.axhline(2.0, color="grey", ls="--", lw=0.8, label="bound 2/(1+ε)")
    ax1.axhline(1.0, color="grey", lw=0.5)
    ax1.set_xlabel("λ")
    ax1.set_ylabel("π_hypo(y3) / π_ref(y3)")
    ax1.set_title("HyPO over all of Y, π_ref(y3) = ε: mass on y3 stays ≤ 2ε", fontsize=10)
    ax1.legend(fontsize=8)
    ax2.set_xlabel("λ")
    ax2.set_ylabel("KL(π_hypo‖π_ref)")
    ax2.set_title("HyPO's KL falls with λ (dotted: DPO from uniform)", fontsize=10)
    ax2.legend(fontsize=7)
    figures.save(fig, path)
