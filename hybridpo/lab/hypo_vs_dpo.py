"""hypo-vs-dpo (beyond the paper): partial coverage plus shared features. DPO drifts out of
π_ref's support; HyPO's online KL term holds it near RLHF.

Y = 20 in-support responses S and 10 out-of-support responses O. Features φ(y) = (ℓ, q, o):
a "length" ℓ (S: U(0, 1); O: U(1.5, 3)), a quality q ~ U(-1, 1), and an indicator o of O.
π_ref = π_{θ_ref} with θ_ref = (0, 0, -12): O gets ~e^-12 of relative mass (numerically outside
the support, so reverse KL to it stays finite but large). Policy class π_θ ∝ exp⟨θ, φ⟩, θ0 = θ_ref.
True reward r* = q + 5 min(ℓ, 1) - 6 max(ℓ - 1, 0): longer is better inside the data, over-long
responses are bad. Pairs only on S (Bradley-Terry on r*).

DPO and IPO only see φ(y+) - φ(y-) on S, whose ℓ-component says "longer is better"; the shared
feature carries that to O, whose ℓ is beyond anything in the data. RLHF fits a *bounded* reward
model r̂ = R' tanh(⟨w, φ⟩/R') (paper's ‖r̂‖∞ ≤ R', Lemma 4.1: KL ≤ 2R'/β) and ascends the exact
losses.kl_regularized_objective. HyPO = DPO + λ·(Alg. 1 line 5): the sampled RLOO estimator
losses.hypo_kl_loss over k fresh samples from π_θ each step (online, unlabeled).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from hybridpo import losses
from hybridpo.lab import figures
from hybridpo.lab.bandit import DTYPE, bt_pairs, count_pairs, generator, minimize
from hybridpo.lab.result import Claim, LabResult

NAME = "hypo-vs-dpo"
SECTION = "beyond the paper (HyPO, Alg. 1; §5)"


@dataclass
class Config:
    n_support: int = 20  # responses in π_ref's support, the only ones in the data
    n_outside: int = 10  # responses π_ref gives ~e^-12 relative mass
    ref_outside_logit: float = -12.0  # θ_ref's weight on the out-of-support indicator
    length_gain: float = 5.0  # r* slope in ℓ up to ℓ = 1
    overlength_cost: float = 6.0  # r* slope (negative) beyond ℓ = 1
    n_pairs: int = 2_000  # Bradley-Terry preference pairs on S
    beta: float = 0.5  # KL strength β of every method
    reward_bound: float = 8.0  # R' of RLHF's bounded reward model
    lambdas: tuple[float, ...] = (0.1, 1.0, 10.0)  # HyPO's KL weights
    k_samples: int = 8  # HyPO: online samples per prompt (RLOO group size)
    n_prompts: int = 8  # HyPO: independent sample groups per step (one prompt, repeated)
    steps: int = 1_500  # Adam steps of every method
    lr: float = 0.05  # Adam step size
    record_every: int = 25  # steps between points of the series


def make_instance(cfg: Config, seed: int) -> dict[str, Tensor]:
    gen = generator(seed)
    ns, no = cfg.n_support, cfg.n_outside
    length = torch.cat([torch.rand(ns, generator=gen, dtype=DTYPE),
                        1.5 + 1.5 * torch.rand(no, generator=gen, dtype=DTYPE)])
    quality = 2 * torch.rand(ns + no, generator=gen, dtype=DTYPE) - 1
    outside = torch.cat([torch.zeros(ns, dtype=DTYPE), torch.ones(no, dtype=DTYPE)])
    phi = torch.stack([length, quality, outside], dim=1)  # (n, 3)
    r_star = quality + cfg.length_gain * length.clamp(max=1) - cfg.overlength_cost * (length - 1).clamp(min=0)
    theta_ref = torch.tensor([0.0, 0.0, cfg.ref_outside_logit], dtype=DTYPE)
    chosen, rejected = bt_pairs(r_star, torch.arange(ns), cfg.n_pairs, gen)
    return {"phi": phi, "r_star": r_star, "theta_ref": theta_ref, "chosen": chosen, "rejected": rejected}


def run(seed: int = 0, cfg: Config | None = None) -> LabResult:
    cfg = cfg or Config()
    inst = make_instance(cfg, seed)
    phi, r_star, theta_ref = inst["phi"], inst["r_star"], inst["theta_ref"]
    n, beta = len(r_star), cfg.beta
    c, r, w = count_pairs(inst["chosen"], inst["rejected"], n)
    ref = torch.log_softmax(phi @ theta_ref, -1)  # (n,)
    gen = generator(seed + 1)  # HyPO's online samples

    def dpo(logp: Tensor) -> Tensor:
        return (w * losses.dpo_loss(logp[c], logp[r], ref[c], ref[r], beta)).sum()

    def ipo(logp: Tensor) -> Tensor:
        return (w * losses.ipo_loss(logp[c], logp[r], ref[c], ref[r], beta)).sum()

    w_hat = torch.zeros(3, dtype=DTYPE, requires_grad=True)
    bounded = lambda v: cfg.reward_bound * torch.tanh(phi @ v / cfg.reward_bound)  # noqa: E731
    minimize(lambda: (w * losses.bradley_terry_loss(bounded(w_hat)[c], bounded(w_hat)[r])).sum(), [w_hat])
    r_hat = bounded(w_hat).detach()

    def rlhf(logp: Tensor) -> Tensor:
        return -losses.kl_regularized_objective(logp, ref, r_hat, beta)

    def hypo(lam: float):
        def loss(logp: Tensor) -> Tensor:
            with torch.no_grad():
                samples = torch.multinomial(logp.exp().expand(cfg.n_prompts, n), cfg.k_samples,
                                            replacement=True, generator=gen)  # (P, k)
            # reduction='mean': λ weighs ∇KL(π‖π_ref) itself, whatever k (Alg. 1's sum form: λ_sum = λ / k)
            kl_term = losses.hypo_kl_loss(logp[samples], ref[samples], reduction="mean").mean()
            return dpo(logp) + lam * kl_term
        return loss

    methods = {"dpo": dpo, "ipo": ipo, "rlhf": rlhf, **{f"hypo_lambda_{lam:g}": hypo(lam) for lam in cfg.lambdas}}
    runs = {}
    for name, loss_fn in methods.items():
        theta = theta_ref.clone().requires_grad_()
        opt = torch.optim.Adam([theta], lr=cfg.lr)
        s: dict[str, list[float]] = {"step": [], "J": [], "kl": [], "outside_mass": []}
        for step in range(cfg.steps + 1):
            logp = torch.log_softmax(phi @ theta, -1)
            if step % cfg.record_every == 0:
                with torch.no_grad():
                    s["step"].append(step)
                    s["J"].append(float(losses.kl_regularized_objective(logp, ref, r_star, beta)))
                    s["kl"].append(float(losses.kl_divergence(logp, ref)))
                    s["outside_mass"].append(float(logp.exp()[cfg.n_support:].sum()))
            if step == cfg.steps:
                break
            opt.zero_grad()
            loss = loss_fn(logp)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"{NAME}: {name} loss is {loss.item()} at step {step}")
            loss.backward()
            opt.step()
        runs[name] = s

    kl_bound = 2 * float(r_hat.abs().max()) / beta
    final = {k: v["kl"][-1] for k, v in runs.items()}
    hypos = [f"hypo_lambda_{lam:g}" for lam in cfg.lambdas]
    claims = [
        Claim("dpo_kl_grows", "DPO's KL(π‖π_ref) grows during training (value: final / value at 10% of the steps)",
              final["dpo"] / runs["dpo"]["kl"][max(1, len(runs["dpo"]["kl"]) // 10)], ">", 1.0),
        Claim("dpo_leaves_support", "DPO moves most of its mass outside π_ref's support (value: final mass on O)",
              runs["dpo"]["outside_mass"][-1], ">", 0.5),
        Claim("ipo_stays_in_support", "IPO does not drift here (value: final mass on O)",
              runs["ipo"]["outside_mass"][-1], "<", 0.01,
              note="IPO's squared loss pulls every margin h to 1/(2β) whatever the preference strength, so its "
                   "implicit reward, and the ℓ-weight it learns, stay small (Azar et al.'s motivation); DPO's "
                   "logistic loss keeps rewarding larger margins on the confident pairs"),
        Claim("rlhf_kl_within_lemma_4_1", "RLHF's KL stays within 2R'/β (value: final KL / (2R'/β))",
              final["rlhf"] / kl_bound, "<=", 1.0),
        Claim("hypo_kl_near_rlhf", f"HyPO, every λ in {list(cfg.lambdas)}: final KL ≤ 2 KL_rlhf + 0.1 nat "
              "(value: max over λ of KL_hypo - (2 KL_rlhf + 0.1))",
              max(final[h] for h in hypos) - (2 * final["rlhf"] + 0.1), "<=", 0.0),
        Claim("hypo_kl_far_below_dpo", "HyPO, every λ: final KL under a tenth of DPO's (value: max KL_hypo / KL_dpo)",
              max(final[h] for h in hypos) / final["dpo"], "<", 0.1),
        Claim("hypo_kl_decreases_in_lambda", "HyPO's final KL falls as λ grows (value: count of increases)",
              sum(final[f"hypo_lambda_{b:g}"] > final[f"hypo_lambda_{a:g}"]
                  for a, b in zip(cfg.lambdas, cfg.lambdas[1:])), "==", 0),
        Claim("hypo_beats_dpo_on_J", "HyPO, every λ: higher final J under r* than DPO (value: min over λ of "
              "J_hypo - J_dpo)", min(runs[h]["J"][-1] for h in hypos) - runs["dpo"]["J"][-1], ">", 0.0),
    ]
    return LabResult(
        name=NAME, section=SECTION, seed=seed,
        settings={**asdict(cfg), "hypo_kl": "sampled RLOO estimator losses.hypo_kl_loss (Alg. 1 line 5), "
                  "k samples × n_prompts groups per step", "rlhf": "exact gradient of losses.kl_regularized_objective",
                  "reward_model": "R' tanh(⟨w, φ⟩/R'), BT MLE by L-BFGS", "lemma_4_1_bound_2Rp_over_beta": kl_bound,
                  "reward_model_w": w_hat.detach().tolist(), "r_star_best_in_support": float(r_star[: cfg.n_support].max())},
        series=runs, claims=claims,
    )


def plot(result: LabResult, path: Path) -> None:
    plt = figures.pyplot()
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4))
    for name, s in result.series.items():
        ax0.plot(s["step"], s["J"], label=name)
        ax1.plot(s["step"], s["kl"], label=name)
    ax1.axhline(result.settings["lemma_4_1_bound_2Rp_over_beta"], color="grey", ls="--", lw=0.8, label="2R'/β")
    ax0.set_title("J(π) = E_π r* - β KL under the true reward")
    ax1.set_title("reverse KL(π‖π_ref)")
    ax1.set_yscale("symlog", linthresh=0.1)
    for ax in (ax0, ax1):
        ax.set_xlabel("Adam step")
        ax.legend(fontsize=7)
    figures.save(fig, path)
