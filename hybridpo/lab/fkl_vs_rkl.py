"""fkl-vs-rkl: lecture Fig. 22.1. Fitting one Gaussian to a two-mode mixture.

Forward KL(p‖q) is mass-covering: its minimiser matches p's mean and variance, so the mean sits
between the modes. Reverse KL(q‖p), the direction RLHF / HyPO regularise with, is mode-seeking:
it locks onto one mode. Densities are discretised on a fine grid and compared with the exact
finite-set losses.kl_divergence; (m, log s) are fitted with L-BFGS from the same start.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from hybridpo import losses
from hybridpo.lab import figures
from hybridpo.lab.bandit import DTYPE, minimize
from hybridpo.lab.result import Claim, LabResult

NAME = "fkl-vs-rkl"
SECTION = "lecture Fig. 22.1"
SERIES_STRIDE = 10  # result.json keeps every 10th grid point of the densities


@dataclass
class Config:
    mode: float = 3.0  # the mixture's modes are at ±mode
    mode_std: float = 0.7  # standard deviation of each mixture component
    grid_min: float = -16.0  # discretisation interval, left end
    grid_max: float = 16.0  # discretisation interval, right end
    grid_points: int = 3201  # grid size (spacing 0.01 with the defaults)
    init_mean: float = 1.0  # both fits start at N(init_mean, init_std²), off-centre so reverse KL can pick a mode
    init_std: float = 1.0


def _log_normal(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    return -0.5 * ((x - mean) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)


def _on_grid(log_density: Tensor) -> Tensor:
    return log_density - torch.logsumexp(log_density, -1)  # a distribution over the grid points


def run(seed: int = 0, cfg: Config | None = None) -> LabResult:
    cfg = cfg or Config()  # deterministic: nothing is drawn
    x = torch.linspace(cfg.grid_min, cfg.grid_max, cfg.grid_points, dtype=DTYPE)
    std = torch.tensor(cfg.mode_std, dtype=DTYPE)
    log_p = _on_grid(torch.logaddexp(_log_normal(x, torch.tensor(-cfg.mode, dtype=DTYPE), std),
                                     _log_normal(x, torch.tensor(cfg.mode, dtype=DTYPE), std)))
    fits = {}
    for direction in ("forward", "reverse"):
        mean = torch.tensor(cfg.init_mean, dtype=DTYPE, requires_grad=True)
        log_std = torch.tensor(math.log(cfg.init_std), dtype=DTYPE, requires_grad=True)

        def objective() -> Tensor:
            log_q = _on_grid(_log_normal(x, mean, log_std.exp()))
            return losses.kl_divergence(log_p, log_q) if direction == "forward" else losses.kl_divergence(log_q, log_p)

        minimize(objective, [mean, log_std], tol=1e-10)
        with torch.no_grad():
            fits[direction] = {"mean": float(mean), "std": float(log_std.exp()), "kl": float(objective()),
                               "log_q": _on_grid(_log_normal(x, mean, log_std.exp()))[::SERIES_STRIDE].tolist()}
    moment_std = math.sqrt(cfg.mode_std**2 + cfg.mode**2)  # variance of the mixture: σ² + m²
    f, r = fits["forward"], fits["reverse"]
    claims = [
        Claim("forward_mean_between_modes", f"forward-KL fit's mean lies between the modes ±{cfg.mode}, at their "
              "midpoint (value: |mean|, threshold 5% of the mode gap)", abs(f["mean"]), "<", 0.05 * 2 * cfg.mode),
        Claim("forward_matches_moments", f"forward-KL fit matches the mixture's std √(σ² + m²) = {moment_std:.3f} "
              "(value: |std - that|)", abs(f["std"] - moment_std), "<", 0.01),
        Claim("reverse_mean_on_a_mode", "reverse-KL fit's mean sits on a mode (value: distance to nearest mode, "
              "threshold 5% of the gap)", abs(abs(r["mean"]) - cfg.mode), "<", 0.05 * 2 * cfg.mode),
        Claim("reverse_matches_one_component", f"reverse-KL fit's std is the component's {cfg.mode_std} "
              "(value: |std - σ|)", abs(r["std"] - cfg.mode_std), "<", 0.02),
        Claim("reverse_kl_near_log2", "the mode-seeking fit pays about log 2 of reverse KL for ignoring one of "
              "two equal modes (value: |KL - log 2|)", abs(r["kl"] - math.log(2)), "<", 0.01),
    ]
    return LabResult(
        name=NAME, section=SECTION, seed=seed,
        settings={**asdict(cfg), "optimizer": "L-BFGS over (mean, log std)", "kl": "losses.kl_divergence on the grid"},
        series={"x": x[::SERIES_STRIDE].tolist(), "log_p": log_p[::SERIES_STRIDE].tolist(), **fits},
        claims=claims,
    )


def plot(result: LabResult, path: Path) -> None:
    plt = figures.pyplot()
    s = result.series
    dx = (s["x"][1] - s["x"][0]) / SERIES_STRIDE  # the fit's grid spacing: densities = probability / dx
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(s["x"], [math.exp(v) / dx for v in s["log_p"]], "k", label="p: two-mode mixture")
    for key, label in (("forward", "argmin KL(p‖q): mass-covering"), ("reverse", "argmin KL(q‖p): mode-seeking")):
        ax.plot(s["x"], [math.exp(v) / dx for v in s[key]["log_q"]], label=f"{label} (mean {s[key]['mean']:.2f})")
    ax.set_xlabel("y")
    ax.set_ylabel("density")
    ax.set_title("Forward vs reverse KL, one Gaussian fitted to two modes")
    ax.legend(fontsize=8)
    figures.save(fig, path)
