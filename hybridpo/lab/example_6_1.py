"""example-6-1: paper Example 6.1, computed exactly as written.

The paper's setting, word for word: Y = {y1, y2, y3}, φ(y1) = [1, 0], φ(y2) = [1/2, 1/2],
φ(y3) = [0, 1]; softmax-linear policies π_w(y) ∝ exp⟨w, φ(y)⟩; w_ref = [1, 1], so π_ref is
uniform; r*(y) = [10, 1]·φ(y) = (10, 5.5, 1); supp(μ) = {y1, y2}; Bradley-Terry labels on r*.
The paper then says the learned reward is r̂ = [10, 1]·φ + c and that "as long as c is small
enough, the policies will decrease the likelihood of y1 and y2 and increase the likelihood of y3".

What the computation shows (every step below is exact):
- Every φ(y) has coordinates summing to 1, so ⟨w + t·[1, 1], φ(y)⟩ = ⟨w, φ(y)⟩ + t: the direction
  [1, 1] is a constant shift of every logit and of every linear reward. The data only see
  φ(y1) - φ(y2) = [½, -½], so the BT fit identifies ŵ1 - ŵ2 = 2(r*1 - r*2) = 9 and nothing else:
  r̂ = r* + c with c = the unidentified [1, 1] component. That is the paper's c, and it cancels in
  the softmax: π ∝ π_ref exp((r* + c)/β) = π_ref exp(r*/β) for every c and every β.
- The class contains π* = π_ref exp(r*/β)/Z (r* is linear), DPO's population minimiser is unique as
  a policy and equals π*, and RLHF's Gibbs policy of the fitted r̂ equals it too.
- π*(y) ∝ e^{r*(y)/β} with r* = (10, 5.5, 1): y1 (the best, inside the data) rises, y3 (the worst,
  unseen) falls, and y2 falls as well, since r*(y2) is the mean of r*(y1) and r*(y3), so
  e^{r1/β} + e^{r3/β} ≥ 2 e^{r2/β} and π(y2) ≤ 1/3 (equality only as β → ∞). At β = 1:
  π = (0.98889, 0.01099, 0.00012). The paper's sentence is false for every c and every β.
  Even reading "∝" as no normalisation at all, π(y) = π_ref(y) e^{(r*(y) + c)/β}, the sentence would
  need c < -10 (y1 falls) and c > -1 (y3 rises) at once: no c.
- With r* = [1, 10]·φ = (1, 5.5, 10) the same computation gives the paper's sentence exactly:
  y1 and y2 fall, the unseen y3 rises (to 0.98889 at β = 1), for every c and β. We keep this
  repair beside the example as written.

DPO is solved two ways: on the population (infinitely many pairs; L-BFGS from w_ref on the exact
expectation of losses.dpo_loss over the label), and by full-batch gradient descent from w_ref on
N sampled BT pairs (the trajectory in the figure; its end point is β·(w1 - w2)/2 = logit(p̂), p̂ =
the sampled fraction of y1 ≻ y2). RLHF: losses.bradley_terry_loss fitted to the population
labels (L-BFGS from ŵ = 0), then the Gibbs policy (bandit.gibbs_logprobs).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from hybridpo import losses
from hybridpo.lab import figures
from hybridpo.lab.bandit import DTYPE, bt_pairs, generator, gibbs_logprobs, minimize
from hybridpo.lab.result import Claim, LabResult

NAME = "example-6-1"
SECTION = "Example 6.1 (§6.1)"
FEATURES = ((1.0, 0.0), (0.5, 0.5), (0.0, 1.0))  # φ(y1), φ(y2), φ(y3), as the paper writes them
W_REF = (1.0, 1.0)  # w_ref: π_ref uniform


@dataclass
class Config:
    beta: float = 1.0  # KL strength β of DPO and RLHF (the paper does not give one; the signs hold for all β)
    w_as_written: tuple[float, float] = (10.0, 1.0)  # r* = [10, 1]·φ, the paper's: optimum y1, inside the data
    w_repair: tuple[float, float] = (1.0, 10.0)  # r* = [1, 10]·φ: optimum y3, unseen
    shifts: tuple[float, ...] = (-100.0, -10.0, -5.5, -1.0, 0.0, 1.0, 10.0, 100.0)  # the paper's c, swept
    betas: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0, 10.0, 100.0)  # β swept for the rise / fall signs
    n_pairs: int = 1_000  # sampled BT pairs on (y1, y2) for the gradient-descent run
    lr: float = 10.0  # its plain gradient-descent step on w (stable below 16/β²)
    iterations: int = 500  # its full-batch steps (converged to 1e-7 by then)
    record_every: int = 5  # steps between points of its trajectory


def _phi() -> Tensor:
    return torch.tensor(FEATURES, dtype=DTYPE)  # (3, 2)


def _population_dpo(r_star: Tensor, beta: float) -> Tensor:
    """Exact DPO policy: L-BFGS from w_ref on E_label[losses.dpo_loss] over the pair (y1, y2)."""
    phi = _phi()
    ref = torch.log_softmax(phi @ torch.tensor(W_REF, dtype=DTYPE), -1)
    p12 = torch.sigmoid(r_star[0] - r_star[1])  # P(y1 ≻ y2)
    w = torch.tensor(W_REF, dtype=DTYPE, requires_grad=True)

    def loss() -> Tensor:
        logp = torch.log_softmax(phi @ w, -1)
        return (p12 * losses.dpo_loss(logp[0], logp[1], ref[0], ref[1], beta)
                + (1 - p12) * losses.dpo_loss(logp[1], logp[0], ref[1], ref[0], beta))

    minimize(loss, [w])
    return torch.log_softmax(phi @ w.detach(), -1)


def _fitted_reward(r_star: Tensor) -> Tensor:
    """Population BT fit of a linear r̂ = ⟨ŵ, φ⟩ from ŵ = 0 (losses.bradley_terry_loss)."""
    phi = _phi()
    p12 = torch.sigmoid(r_star[0] - r_star[1])
    w_hat = torch.zeros(2, dtype=DTYPE, requires_grad=True)

    def loss() -> Tensor:
        r = phi @ w_hat
        return p12 * losses.bradley_terry_loss(r[0], r[1]) + (1 - p12) * losses.bradley_terry_loss(r[1], r[0])

    minimize(loss, [w_hat])
    return (phi @ w_hat).detach()


def _sampled_dpo(r_stars: Tensor, cfg: Config, gen: torch.Generator) -> dict:
    """Full-batch gradient descent on losses.dpo_loss over N sampled pairs, every case at once.
    r_stars (K, 3); returns the trajectories of π (K, T, 3) and each case's label frequency p̂."""
    phi = _phi()
    ref = torch.log_softmax(phi @ torch.tensor(W_REF, dtype=DTYPE), -1)
    chosen, rejected, p_hat = [], [], []
    for r_star in r_stars:
        c, r = bt_pairs(r_star, torch.arange(2), cfg.n_pairs, gen)
        chosen.append(c)
        rejected.append(r)
        p_hat.append(float((c == 0).to(DTYPE).mean()))
    chosen, rejected = torch.stack(chosen), torch.stack(rejected)  # (K, N)
    w = torch.tensor(W_REF, dtype=DTYPE).repeat(len(r_stars), 1).requires_grad_()  # (K, 2)
    steps, probs = [], []
    for it in range(cfg.iterations + 1):
        logp = torch.log_softmax(w @ phi.T, -1)  # (K, 3)
        if it % cfg.record_every == 0 or it == cfg.iterations:
            steps.append(it)
            probs.append(logp.detach().exp())
        if it == cfg.iterations:
            break
        loss = losses.dpo_loss(logp.gather(1, chosen), logp.gather(1, rejected),
                               ref[chosen], ref[rejected], cfg.beta).mean(1).sum()  # cases are independent
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{NAME}: sampled DPO loss is {loss.item()} at iteration {it}")
        (grad,) = torch.autograd.grad(loss, w)
        with torch.no_grad():
            w -= cfg.lr * grad
    return {"iteration": steps, "probs": torch.stack(probs, 1), "p_hat": p_hat}


def _case(w_star: tuple[float, float], cfg: Config) -> dict:
    phi = _phi()
    r_star = phi @ torch.tensor(w_star, dtype=DTYPE)  # (3,)
    ref = torch.log_softmax(phi @ torch.tensor(W_REF, dtype=DTYPE), -1)
    r_hat = _fitted_reward(r_star)
    dpo = _population_dpo(r_star, cfg.beta)
    rlhf_by_shift = [gibbs_logprobs(ref, r_star + c, cfg.beta).exp().tolist() for c in cfg.shifts]
    dpo_by_beta = [_population_dpo(r_star, b).exp().tolist() for b in cfg.betas]
    return {
        "r_star": r_star.tolist(),
        "r_hat": r_hat.tolist(),
        "fitted_shift_c": (r_hat - r_star).tolist(),  # r̂ - r*: the same constant c on all three responses
        "dpo": dpo.exp().tolist(),
        "rlhf": gibbs_logprobs(ref, r_hat, cfg.beta).exp().tolist(),
        "optimal": gibbs_logprobs(ref, r_star, cfg.beta).exp().tolist(),  # π* = π_ref e^{r*/β}/Z
        "rlhf_by_shift": rlhf_by_shift,  # π ∝ π_ref e^{(r* + c)/β}, one row per c in cfg.shifts
        "dpo_by_beta": dpo_by_beta,  # exact DPO, one row per β in cfg.betas
    }


def _sentence_count(rows: list[list[float]]) -> int:
    """How many policies match the paper's sentence: π(y1) and π(y2) below 1/3, π(y3) above."""
    third = 1.0 / 3.0
    return sum(p[0] < third and p[1] < third and p[2] > third for p in rows)


def run(seed: int = 0, cfg: Config | None = None) -> LabResult:
    cfg = cfg or Config()
    cases = {"as_written": _case(cfg.w_as_written, cfg), "repair": _case(cfg.w_repair, cfg)}
    phi = _phi()
    sampled = _sampled_dpo(torch.stack([phi @ torch.tensor(w, dtype=DTYPE) for w in (cfg.w_as_written, cfg.w_repair)]),
                           cfg, generator(seed))
    for k, key in enumerate(cases):
        cases[key]["sampled_dpo"] = {"iteration": sampled["iteration"], "p_hat": sampled["p_hat"][k],
                                     "probs": sampled["probs"][k].tolist()}
    # linear coverage (paper, after the example): Σ_μ = E_μ φφᵀ, μ uniform on {y1, y2}
    sigma = (phi[:2].T @ phi[:2]) / 2
    coverage = [float(v) for v in (phi @ torch.linalg.inv(sigma) * phi).sum(-1)]  # ‖φ(y)‖²_{Σ⁻¹}

    a, s = cases["as_written"], cases["repair"]
    third = 1.0 / 3.0
    all_a = a["rlhf_by_shift"] + a["dpo_by_beta"] + [a["dpo"], a["rlhf"]]
    all_s = s["rlhf_by_shift"] + s["dpo_by_beta"] + [s["dpo"], s["rlhf"]]
    traj_a, traj_s = a["sampled_dpo"]["probs"], s["sampled_dpo"]["probs"]

    def steps(traj: list[list[float]], i: int) -> list[float]:
        return [b[i] - p[i] for p, b in zip(traj, traj[1:])]

    note = ("the paper says the policies decrease y1 and y2 and increase y3 'as long as c is small enough'; "
            "with r* = [10, 1]·φ the optimum y1 lies inside the data and DPO / RLHF raise it, lower y2 and "
            "the unseen y3, for every c (it cancels in the softmax) and every β")
    claims = [
        Claim("as_written_optimum_in_data", "r* = [10, 1]·φ = (10, 5.5, 1): the best response is y1, inside the "
              "data (value: 0-based index of argmax r*)", max(range(3), key=lambda i: a["r_star"][i]), "==", 0),
        Claim("fitted_reward_is_r_star_plus_constant", "the BT fit on (y1, y2) returns r̂ = r* + c, one c on all "
              "three responses, y3 included (value: max - min of r̂ - r*)",
              max(a["fitted_shift_c"]) - min(a["fitted_shift_c"]), "<", 1e-9),
        Claim("as_written_y1_rises", f"r* = [10, 1]·φ: y1 rises, for every c in {list(cfg.shifts)} and β in "
              f"{list(cfg.betas)} (value: min π(y1) - 1/3)", min(p[0] for p in all_a) - third, ">", 0, note=note),
        Claim("as_written_y2_falls", "r* = [10, 1]·φ: y2 falls, every c and β (value: max π(y2) - 1/3)",
              max(p[1] for p in all_a) - third, "<", 0),
        Claim("as_written_y3_falls", "r* = [10, 1]·φ: the unseen y3 falls, every c and β (value: max π(y3) - 1/3)",
              max(p[2] for p in all_a) - third, "<", 0, note=note),
        Claim("as_written_sentence_never_holds", "r* = [10, 1]·φ: no c and no β gives the paper's 'y1, y2 down, "
              "y3 up' (value: number of such policies)", _sentence_count(all_a), "==", 0, note=note),
        Claim("shift_cancels", "r̂ = r* + c: every c gives the same policy (value: max |Δπ| over the c sweep, "
              "both reward vectors)", max(abs(x - y) for c in (a, s) for row in c["rlhf_by_shift"]
                                          for x, y in zip(row, c["optimal"])), "<", 1e-12),
        Claim("dpo_equals_optimal", "the class contains π* = π_ref e^{r*/β}/Z and DPO's population minimiser is "
              "π* (value: max |π_dpo - π*|, both reward vectors)",
              max(abs(x - y) for c in (a, s) for x, y in zip(c["dpo"], c["optimal"])), "<", 1e-9),
        Claim("dpo_equals_rlhf", "DPO and RLHF with the fitted r̂ return the same policy (value: max |Δπ|)",
              max(abs(x - y) for c in (a, s) for x, y in zip(c["dpo"], c["rlhf"])), "<", 1e-9),
        Claim("sampled_dpo_monotone", f"gradient descent on {cfg.n_pairs} sampled pairs, r* = [10, 1]·φ: π(y1) "
              "never falls and π(y2), π(y3) never rise (value: largest step against that sign; round-off once "
              "converged)", max(max(-d for d in steps(traj_a, 0)), max(steps(traj_a, 1)), max(steps(traj_a, 2))),
              "<", 1e-12),
        Claim("sampled_dpo_signs", "... and at the end y1 is up, y2 and y3 down (value: min of π(y1) - 1/3, "
              "1/3 - π(y2), 1/3 - π(y3))", min(traj_a[-1][0] - third, third - traj_a[-1][1], third - traj_a[-1][2]),
              ">", 0),
        Claim("linear_coverage_finite", "the data have linear global coverage, as the paper checks: max_y "
              "‖φ(y)‖²_{Σ_μ⁻¹} is finite (value; 10 by hand, at y3)", max(coverage), "<", 10 + 1e-9),
        Claim("repair_optimum_unseen", "r* = [1, 10]·φ = (1, 5.5, 10): the best response is y3, unseen "
              "(value: argmax index)", max(range(3), key=lambda i: s["r_star"][i]), "==", 2),
        Claim("repair_sentence_always_holds", "r* = [1, 10]·φ: every c and every β give the paper's sentence, "
              f"y1 and y2 down, y3 up (value: matching policies of {len(all_s)})", _sentence_count(all_s), "==",
              len(all_s)),
        Claim("repair_sampled_dpo_monotone", "gradient descent on sampled pairs, r* = [1, 10]·φ: π(y3) never falls "
              "and π(y1), π(y2) never rise (value: largest step against that sign)",
              max(max(steps(traj_s, 0)), max(steps(traj_s, 1)), max(-d for d in steps(traj_s, 2))), "<", 1e-12),
        Claim("repair_sampled_dpo_signs", "... and at the end y3 is up, y1 and y2 down (value: min of π(y3) - 1/3, "
              "1/3 - π(y1), 1/3 - π(y2))", min(traj_s[-1][2] - third, third - traj_s[-1][0], third - traj_s[-1][1]),
              ">", 0),
    ]
    return LabResult(
        name=NAME, section=SECTION, seed=seed,
        settings={**asdict(cfg), "features": FEATURES, "w_ref": W_REF, "pi_ref": "uniform (w_ref = [1, 1])",
                  "policy": "softmax-linear π ∝ exp⟨w, φ⟩", "data": "pairs on (y1, y2) only, BT labels on r*",
                  "optimizer": "population: L-BFGS from w_ref (exact); sampled: full-batch gradient descent from w_ref",
                  "coverage_phi_norms_sigma_inv": coverage},
        series=cases, claims=claims,
    )


def plot(result: LabResult, path: Path) -> None:
    plt = figures.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    labels = ["y1 (data)", "y2 (data)", "y3 (unseen)"]
    for ax, (key, title) in zip(axes[:2], (("as_written", "as written: r* = [10, 1]·φ = (10, 5.5, 1)"),
                                           ("repair", "repair: r* = [1, 10]·φ = (1, 5.5, 10)"))):
        case = result.series[key]
        bars = [("π_ref", [1 / 3] * 3), ("DPO (exact)", case["dpo"]), ("RLHF, r̂ = r* + c (any c)", case["rlhf"]),
                ("π* (β-optimal)", case["optimal"])]
        for k, (label, probs) in enumerate(bars):
            ax.bar([i + (k - 1.5) * 0.2 for i in range(3)], probs, 0.2, label=label)
        ax.set_xticks(range(3), labels)
        ax.set_yscale("log")
        ax.set_ylim(1e-5, 2)
        ax.set_ylabel("π(y) (log scale)")
        ax.set_title(f"{title}, β = {result.settings['beta']:g}", fontsize=10)
        ax.legend(fontsize=7, loc="lower left")
    ax = axes[2]
    for key, style in (("as_written", "-"), ("repair", "--")):
        s = result.series[key]["sampled_dpo"]
        for i, label in enumerate(labels):
            ax.semilogy(s["iteration"], [p[i] for p in s["probs"]], style, color=f"C{i}", label=f"{key}: {label}")
    ax.axhline(1 / 3, color="grey", lw=0.5)
    ax.set_xlabel("gradient step (sampled pairs)")
    ax.set_ylabel("π(y)")
    ax.set_title(f"DPO, gradient descent on {result.settings['n_pairs']:,} sampled pairs (y1, y2)", fontsize=10)
    ax.legend(fontsize=7)
    figures.save(fig, path)
