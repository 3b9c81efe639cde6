"""extrapolation-linear: paper §6.1.1, Fig. 2 (left, middle). Function approximation extrapolates.

|Y| = 100 responses with d = 16 features, linear reward r*(y) = ⟨w*, φ(y)⟩, w* = [5, U(-2, 2)…].
Bradley-Terry pairs only on the first 50 responses; π_ref uniform; log-linear policy
π_θ(y) ∝ exp⟨θ, φ(y)⟩ (θ = 0 is π_ref). DPO (gradient descent on losses.dpo_loss) and online RLHF
(reward model by losses.bradley_terry_loss, then gradient ascent on the exact
losses.kl_regularized_objective) both raise the log-prob of the best unseen response while the
mean log-prob of the preferred responses in the data falls: mass flows along the features to
responses no pair contains.

Our reading of the paper's features (not spelled out in full there): φ(y)_1 = y/(|Y|-1), which
w*_1 = 5 rewards, so better responses tend to sit beyond the data; φ(y)_{2..16} ~ U(-½, ½).
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

NAME = "extrapolation-linear"
SECTION = "§6.1.1, Fig. 2 left/middle"


@dataclass
class Config:
    n_responses: int = 100  # |Y|
    dim: int = 16  # feature dimension d
    n_seen: int = 50  # pairs are drawn on the first n_seen responses only
    n_pairs: int = 10_000  # Bradley-Terry preference pairs
    w_first: float = 5.0  # w*_1; the other coordinates are U(-2, 2)
    feature_scale: float = 0.5  # φ_{2..d} ~ U(-scale/2, scale/2)
    beta: float = 1.0  # KL strength β of DPO and RLHF
    lr: float = 1.0  # plain gradient-descent step size, both methods
    iterations: int = 1000  # full-batch gradient steps, both methods
    record_every: int = 10  # iterations between points of the series


def make_instance(cfg: Config, seed: int) -> dict[str, Tensor]:
    gen = generator(seed)
    n = cfg.n_responses
    phi = torch.cat([
        torch.linspace(0.0, 1.0, n, dtype=DTYPE)[:, None],
        (torch.rand(n, cfg.dim - 1, generator=gen, dtype=DTYPE) - 0.5) * cfg.feature_scale,
    ], dim=1)  # (n, d)
    w_star = torch.cat([torch.tensor([cfg.w_first], dtype=DTYPE),
                        4 * torch.rand(cfg.dim - 1, generator=gen, dtype=DTYPE) - 2])  # (d,)
    r_star = phi @ w_star  # (n,)
    chosen, rejected = bt_pairs(r_star, torch.arange(cfg.n_seen), cfg.n_pairs, gen)
    return {"phi": phi, "w_star": w_star, "r_star": r_star, "chosen": chosen, "rejected": rejected}


def _train(loss_fn, cfg: Config, phi: Tensor, track: dict[str, Tensor]) -> dict[str, list[float]]:
    """Plain gradient descent on θ from 0 (= π_ref); records log-probs of the tracked sets."""
    theta = torch.zeros(cfg.dim, dtype=DTYPE, requires_grad=True)
    opt = torch.optim.SGD([theta], lr=cfg.lr)
    series: dict[str, list[float]] = {"iteration": [], **{k: [] for k in track}}
    for it in range(cfg.iterations + 1):
        logp = torch.log_softmax(phi @ theta, dim=-1)  # (n,)
        if it % cfg.record_every == 0:
            series["iteration"].append(it)
            for key, weights in track.items():
                series[key].append(float((weights * logp.detach()).sum()))
        if it == cfg.iterations:
            break
        opt.zero_grad()
        loss = loss_fn(logp)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{NAME}: loss is {loss.item()} at iteration {it}")
        loss.backward()
        opt.step()
    return series


def run(seed: int = 0, cfg: Config | None = None) -> LabResult:
    cfg = cfg or Config()
    inst = make_instance(cfg, seed)
    phi, r_star, n = inst["phi"], inst["r_star"], cfg.n_responses
    c, r, w = count_pairs(inst["chosen"], inst["rejected"], n)
    ref = torch.full((n,), -torch.log(torch.tensor(float(n), dtype=DTYPE)).item(), dtype=DTYPE)
    best_unseen = int(r_star[cfg.n_seen:].argmax()) + cfg.n_seen
    # mean log-prob of the preferred responses, over the dataset's pairs (with multiplicity)
    preferred = torch.bincount(inst["chosen"], minlength=n).to(DTYPE) / cfg.n_pairs
    track = {"preferred_mean_logp": preferred, "best_unseen_logp": torch.nn.functional.one_hot(
        torch.tensor(best_unseen), n).to(DTYPE)}

    def dpo(logp: Tensor) -> Tensor:
        return (w * losses.dpo_loss(logp[c], logp[r], ref[c], ref[r], cfg.beta)).sum()

    w_hat = torch.zeros(cfg.dim, dtype=DTYPE, requires_grad=True)
    minimize(lambda: (w * losses.bradley_terry_loss((phi @ w_hat)[c], (phi @ w_hat)[r])).sum(), [w_hat])
    r_hat = (phi @ w_hat).detach()

    def rlhf(logp: Tensor) -> Tensor:
        return -losses.kl_regularized_objective(logp, ref, r_hat, cfg.beta)

    runs = {"dpo": _train(dpo, cfg, phi, track), "rlhf": _train(rlhf, cfg, phi, track)}
    claims = []
    for method, label in (("dpo", "DPO"), ("rlhf", "RLHF")):
        s = runs[method]
        claims += [
            Claim(f"{method}_best_unseen_logp_rises",
                  f"{label}: log π(best unseen response) rises (value: final - initial, nats)",
                  s["best_unseen_logp"][-1] - s["best_unseen_logp"][0], ">", 0.0),
            Claim(f"{method}_preferred_logp_falls",
                  f"{label}: mean log π of the preferred responses in the data falls (value: final - initial)",
                  s["preferred_mean_logp"][-1] - s["preferred_mean_logp"][0], "<", 0.0),
        ]
    return LabResult(
        name=NAME, section=SECTION, seed=seed,
        settings={**asdict(cfg), "policy": "log-linear softmax π ∝ exp⟨θ, φ⟩, θ0 = 0 (= uniform π_ref)",
                  "optimizer": "full-batch plain gradient descent", "reward_model": "linear, BT MLE by L-BFGS",
                  "best_unseen_response": best_unseen, "best_overall_response": int(r_star.argmax()),
                  "reward_model_error": float((w_hat.detach() - inst["w_star"]).norm()),
                  "w_star": inst["w_star"].tolist()},
        series=runs, claims=claims,
    )


def plot(result: LabResult, path: Path) -> None:
    plt = figures.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (method, label) in zip(axes, (("rlhf", "RLHF (online)"), ("dpo", "DPO"))):
        s = result.series[method]
        ax.plot(s["iteration"], s["preferred_mean_logp"], label="mean log π(preferred, in data)")
        ax.plot(s["iteration"], s["best_unseen_logp"], label="log π(best unseen response)")
        ax.set_title(f"{label}: linear bandit, |Y|=100, d=16")
        ax.set_xlabel("gradient step")
        ax.set_ylabel("log-probability")
        ax.legend(fontsize=8)
    figures.save(fig, path)
