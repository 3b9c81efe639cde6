"""example-6-1: paper Example 6.1, exact. Does DPO with function approximation extrapolate to an
unseen optimal response?

Three responses with 2-d features, a log-linear policy π_θ(y) ∝ exp⟨θ, φ(y)⟩ (θ = 0 is the uniform
π_ref) and preference data only on (y1, y2), infinitely many pairs labelled by Bradley-Terry on a
linear r*(y) = ⟨w*, φ(y)⟩ (+ c). The paper's exact feature values were not available to us
offline, so we fix features that satisfy the two facts the issue points out: φ(y1) = (1, 0), φ(y2) = (0, 1),
φ(y3) = (0, 2). With w* = [10, 1] (as written) the optimum is y1, inside the data; with
w* = [1, 10] it is y3, unseen.

Exact solutions: DPO's population loss (losses.dpo_loss) and the BT reward loss
(losses.bradley_terry_loss) only see φ(y1) - φ(y2); L-BFGS from 0 stays in that direction and
returns the minimum-norm minimiser, θ = (r*1 - r*2)/β · (φ1 - φ2)/‖φ1 - φ2‖². RLHF's policy is the
Gibbs policy of the fitted linear r̂, which lies in the same class (θ = ŵ/β).
A constant shift c of r* changes no preference label, so it cannot change any policy: a softmax
policy has no way to see it, and neither has the data.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from hybridpo import losses
from hybridpo.lab import figures
from hybridpo.lab.bandit import DTYPE, minimize
from hybridpo.lab.result import Claim, LabResult

NAME = "example-6-1"
SECTION = "Example 6.1 (§6.1)"
FEATURES = ((1.0, 0.0), (0.0, 1.0), (0.0, 2.0))  # φ(y1), φ(y2), φ(y3)


@dataclass
class Config:
    beta: float = 1.0  # KL strength β of DPO and RLHF
    w_as_written: tuple[float, float] = (10.0, 1.0)  # r* = [10, 1]·φ: optimum y1, inside the data
    w_swapped: tuple[float, float] = (1.0, 10.0)  # r* = [1, 10]·φ: optimum y3, unseen
    shift: float = 5.0  # constant c added to r* in the shift check


def _solve(w_star: Tensor, shift: float, beta: float) -> dict[str, list[float]]:
    phi = torch.tensor(FEATURES, dtype=DTYPE)  # (3, 2)
    r_star = phi @ w_star + shift  # (3,)
    p12 = torch.sigmoid(r_star[0] - r_star[1])  # P(y1 ≻ y2)
    ref = torch.full((3,), -torch.log(torch.tensor(3.0)).item(), dtype=DTYPE)

    def both_orders(loss_of_pair) -> Tensor:  # expectation over the label of the pair (y1, y2)
        return p12 * loss_of_pair(0, 1) + (1 - p12) * loss_of_pair(1, 0)

    theta = torch.zeros(2, dtype=DTYPE, requires_grad=True)

    def dpo() -> Tensor:
        logp = torch.log_softmax(phi @ theta, -1)
        return both_orders(lambda i, j: losses.dpo_loss(logp[i], logp[j], ref[i], ref[j], beta))

    minimize(dpo, [theta])
    w_hat = torch.zeros(2, dtype=DTYPE, requires_grad=True)

    def reward() -> Tensor:
        r = phi @ w_hat
        return both_orders(lambda i, j: losses.bradley_terry_loss(r[i], r[j]))

    minimize(reward, [w_hat])
    with torch.no_grad():
        dpo_p = torch.softmax(phi @ theta, -1)
        rlhf_p = torch.softmax(ref + (phi @ w_hat) / beta, -1)
        star = torch.softmax(ref + r_star / beta, -1)  # π* = π_ref exp(r*/β)/Z
        d = phi[0] - phi[1]
        closed = torch.softmax(phi @ ((r_star[0] - r_star[1]) / beta * d / d.dot(d)), -1)
    return {"r_star": r_star.tolist(), "dpo": dpo_p.tolist(), "rlhf": rlhf_p.tolist(),
            "optimal": star.tolist(), "dpo_closed_form": closed.tolist()}


def run(seed: int = 0, cfg: Config | None = None) -> LabResult:
    cfg = cfg or Config()  # exact and deterministic: the seed is recorded, nothing is drawn
    third = 1.0 / 3.0
    cases = {
        "as_written": _solve(torch.tensor(cfg.w_as_written, dtype=DTYPE), 0.0, cfg.beta),
        "as_written_shifted": _solve(torch.tensor(cfg.w_as_written, dtype=DTYPE), cfg.shift, cfg.beta),
        "swapped": _solve(torch.tensor(cfg.w_swapped, dtype=DTYPE), 0.0, cfg.beta),
    }
    a, s = cases["as_written"], cases["swapped"]
    note = ("with r* = [10, 1]·φ the optimum y1 is in the data, so the example as written shows DPO "
            "lowering the unseen y3, not extrapolating to it; with [1, 10] the unseen y3 is optimal and "
            "DPO raises it")
    claims = [
        Claim("as_written_optimum_in_data", "r* = [10, 1]·φ: the optimal response is y1, inside the data "
              "(value: index of argmax r*, 0-based)", max(range(3), key=lambda i: a["r_star"][i]), "==", 0, note=note),
        Claim("as_written_y1_rises", "r* = [10, 1]·φ: DPO raises π(y1) (value: π(y1) - 1/3)", a["dpo"][0] - third, ">", 0),
        Claim("as_written_y2_falls", "r* = [10, 1]·φ: DPO lowers π(y2) (value: π(y2) - 1/3)", a["dpo"][1] - third, "<", 0),
        Claim("as_written_y3_falls", "r* = [10, 1]·φ: DPO lowers the unseen π(y3) (value: π(y3) - 1/3)",
              a["dpo"][2] - third, "<", 0, note=note),
        Claim("swapped_optimum_unseen", "r* = [1, 10]·φ: the optimal response is y3, unseen (value: argmax index)",
              max(range(3), key=lambda i: s["r_star"][i]), "==", 2),
        Claim("swapped_y3_rises", "r* = [1, 10]·φ: DPO raises the unseen optimum π(y3) (value: π(y3) - 1/3)",
              s["dpo"][2] - third, ">", 0),
        Claim("swapped_y3_is_dpo_mode", "r* = [1, 10]·φ: y3 becomes DPO's most likely response "
              "(value: π(y3) - max(π(y1), π(y2)))", s["dpo"][2] - max(s["dpo"][:2]), ">", 0),
        Claim("swapped_y1_falls", "r* = [1, 10]·φ: DPO lowers π(y1) (value: π(y1) - 1/3)", s["dpo"][0] - third, "<", 0),
        Claim("swapped_preferred_y2_falls", "r* = [1, 10]·φ: even the preferred y2 loses mass to the unseen y3 "
              "(value: π(y2) - 1/3)", s["dpo"][1] - third, "<", 0),
        Claim("shift_cancels", f"adding c = {cfg.shift} to r* leaves DPO's policy unchanged (value: max |Δπ|)",
              max(abs(x - y) for x, y in zip(a["dpo"], cases["as_written_shifted"]["dpo"])), "<", 1e-9),
        Claim("dpo_equals_rlhf", "DPO and RLHF return the same policy in both cases (value: max |π_dpo - π_rlhf|)",
              max(abs(x - y) for c in (a, s) for x, y in zip(c["dpo"], c["rlhf"])), "<", 1e-6),
        Claim("dpo_matches_closed_form", "L-BFGS reaches the minimum-norm closed form (value: max |Δπ|)",
              max(abs(x - y) for c in (a, s) for x, y in zip(c["dpo"], c["dpo_closed_form"])), "<", 1e-6),
    ]
    return LabResult(
        name=NAME, section=SECTION, seed=seed,
        settings={**asdict(cfg), "features": FEATURES, "pi_ref": "uniform", "policy": "log-linear softmax",
                  "data": "population pairs on (y1, y2) only", "optimizer": "L-BFGS from 0 (exact)"},
        series=cases, claims=claims,
    )


def plot(result: LabResult, path: Path) -> None:
    plt = figures.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, (key, title) in zip(axes, (("as_written", "r* = [10, 1]·φ (as written): optimum y1 in data"),
                                       ("swapped", "r* = [1, 10]·φ: optimum y3 unseen"))):
        case = result.series[key]
        for k, (label, probs) in enumerate((("π_ref", [1 / 3] * 3), ("DPO", case["dpo"]),
                                            ("RLHF", case["rlhf"]), ("π* (β-optimal)", case["optimal"]))):
            ax.bar([i + (k - 1.5) * 0.2 for i in range(3)], probs, 0.2, label=label)
        ax.set_xticks(range(3), ["y1 (data)", "y2 (data)", "y3 (unseen)"])
        ax.set_ylabel("π(y)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    figures.save(fig, path)
