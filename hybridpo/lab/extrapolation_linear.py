"""extrapolation-linear: paper §6.1.1, Fig. 2 (left, middle). Function approximation extrapolates.

The setting as the paper writes it: |Y| = 100, d = 16; 99 random feature vectors of ℓ1 norm 1 plus
a final φ = [1, 0, …, 0]; r*(y) = ⟨w*, φ(y)⟩ with w* = [5, U(-2, 2), …]; 10,000 Bradley-Terry
pairs on the first 50 responses; π_ref uniform. Tracked: the mean log-prob of the preferred
responses and the log-prob of the best response φ = [1, 0, …, 0] (the 100th, never in a pair).
DPO: 5,000 full-batch gradient-descent steps on losses.dpo_loss (Fig. 2 middle). Online RLHF: a
linear reward model fitted by losses.bradley_terry_loss (L-BFGS), then 1,000 gradient steps on the
exact losses.kl_regularized_objective (Fig. 2 left).

Two policy classes side by side, both over w ∈ R^16 and both equal to π_ref at w = [1, …, 1]:
- "normalised", the formula the text writes: π(y) = ⟨w, φ(y)⟩ / Σ_y' ⟨w, φ(y')⟩;
- "softmax", the name the text gives it ("softmax linear policies"): π(y) ∝ exp⟨w, φ(y)⟩.

Choices where the text is silent or ambiguous:
- Sign of the random vectors: the normalised form is a distribution only if ⟨w, φ(y)⟩ > 0 for every
  y, and π_ref uniform needs ⟨w_ref, φ(y)⟩ equal for every y. Nonnegative vectors of ℓ1 norm 1
  give both at once with w_ref = [1, …, 1] (each φ sums to 1), so we draw the 99 vectors uniformly
  on the probability simplex (Dirichlet(1, …, 1): i.i.d. exponentials, normalised). Then r* ≤ 5 with
  equality only at φ = [1, 0, …, 0]: the appended response is the unique best.
- The normalised class must keep ⟨w, φ(y)⟩ > 0. A step that leaves it is followed by
  w ← w + t·[1, …, 1] with the smallest t ≥ 0 giving min_y ⟨w, φ(y)⟩ ≥ `positivity_floor` (adding t
  to w adds t to every ⟨w, φ(y)⟩, since each φ sums to 1). `corrections` counts these steps; at
  the default β = 1 DPO never needs one (plain gradient descent throughout).
- β, step size and batch: not given. β = 1, step 1, full batch (deterministic); β ∈ `betas` is
  swept in the same batched run (rows of one weight matrix, each row its own problem).
- "a random subset of preferred responses": we average log π over every pair's preferred
  response (with multiplicity), the expectation of any random subset's mean.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from hybridpo import losses
from hybridpo.lab import figures
from hybridpo.lab.bandit import DTYPE, bt_pairs, generator, minimize
from hybridpo.lab.result import Claim, LabResult

NAME = "extrapolation-linear"
SECTION = "§6.1.1, Fig. 2 left/middle"
FORMS = ("softmax", "normalised")  # π ∝ exp⟨w, φ⟩, and π = ⟨w, φ⟩ / Σ⟨w, φ⟩ (the text's formula)


@dataclass
class Config:
    n_responses: int = 100  # |Y|: 99 random vectors plus φ = [1, 0, …, 0], which comes last
    dim: int = 16  # feature dimension d
    n_seen: int = 50  # pairs are drawn on the first n_seen responses only
    n_pairs: int = 10_000  # Bradley-Terry preference pairs
    w_first: float = 5.0  # w*_1
    w_rest: float = 2.0  # w*_{2..d} ~ U(-w_rest, w_rest)
    beta: float = 1.0  # KL strength β of the headline runs (the claims)
    betas: tuple[float, ...] = (0.3, 1.0, 3.0)  # β swept in the same batched run (must contain beta)
    lr: float = 1.0  # plain gradient-descent step size, every run
    dpo_iterations: int = 5_000  # full-batch DPO steps (Fig. 2 middle)
    rlhf_iterations: int = 1_000  # gradient steps on the KL-regularised objective (Fig. 2 left)
    positivity_floor: float = 1e-3  # the normalised class is kept at min_y ⟨w, φ(y)⟩ ≥ this
    record_every: int = 25  # iterations between points of the series


def make_instance(cfg: Config, seed: int) -> dict[str, Tensor]:
    gen = generator(seed)
    expo = -torch.log(torch.rand(cfg.n_responses - 1, cfg.dim, generator=gen, dtype=DTYPE))
    best = torch.zeros(1, cfg.dim, dtype=DTYPE)
    best[0, 0] = 1.0
    phi = torch.cat([expo / expo.sum(1, keepdim=True), best])  # (n, d), rows on the simplex
    w_star = torch.cat([torch.tensor([cfg.w_first], dtype=DTYPE),
                        (2 * torch.rand(cfg.dim - 1, generator=gen, dtype=DTYPE) - 1) * cfg.w_rest])  # (d,)
    r_star = phi @ w_star  # (n,)
    chosen, rejected = bt_pairs(r_star, torch.arange(cfg.n_seen), cfg.n_pairs, gen)
    return {"phi": phi, "w_star": w_star, "r_star": r_star, "chosen": chosen, "rejected": rejected}


def policy_logprobs(w_soft: Tensor, w_norm: Tensor, phi: Tensor) -> Tensor:
    """log π for each row of the two weight matrices: softmax rows, then normalised rows.
    w_soft (Ks, d), w_norm (Kn, d), phi (n, d) -> (Ks + Kn, n)."""
    soft = torch.log_softmax(w_soft @ phi.T, -1)
    lin = w_norm @ phi.T  # ⟨w, φ(y)⟩ > 0, kept so by _train
    return torch.cat([soft, torch.log(lin) - torch.log(lin.sum(-1, keepdim=True))])


def _train(loss_fn, cfg: Config, phi: Tensor, iterations: int, track: dict[str, Tensor]) -> dict:
    """Batched plain gradient descent from w = [1, …, 1] (= π_ref) for every (form, β) row.
    loss_fn(logp (K, n)) -> (K,) per-row losses; returns per-row series of the tracked log-probs."""
    k = len(cfg.betas)
    w_soft = torch.ones(k, cfg.dim, dtype=DTYPE, requires_grad=True)
    w_norm = torch.ones(k, cfg.dim, dtype=DTYPE, requires_grad=True)
    corrections = torch.zeros(k, dtype=torch.long)
    out: dict = {"iteration": [], **{key: [] for key in track}}
    for it in range(iterations + 1):
        logp = policy_logprobs(w_soft, w_norm, phi)  # (2k, n)
        if it % cfg.record_every == 0 or it == iterations:
            out["iteration"].append(it)
            for key, weights in track.items():
                out[key].append((logp.detach() * weights).sum(-1))
        if it == iterations:
            break
        loss = loss_fn(logp).sum()  # rows are independent problems
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{NAME}: loss is {loss.item()} at iteration {it}")
        g_soft, g_norm = torch.autograd.grad(loss, (w_soft, w_norm))
        with torch.no_grad():
            w_soft -= cfg.lr * g_soft
            w_norm -= cfg.lr * g_norm
            shift = (cfg.positivity_floor - (w_norm @ phi.T).min(-1).values).clamp(min=0)  # (k,)
            w_norm += shift[:, None]
            corrections += shift > 0
    rows = {}
    for f, form in enumerate(FORMS):
        for b, beta in enumerate(cfg.betas):
            i = f * k + b
            rows[f"{form}_beta_{beta:g}"] = {
                "iteration": out["iteration"], **{key: [float(v[i]) for v in out[key]] for key in track},
                **({"corrections": int(corrections[b])} if form == "normalised" else {})}
    return rows


def dpo_table_loss(logp: Tensor, ref: Tensor, pair_weight: Tensor, beta: Tensor) -> Tensor:
    """Σ_{i,j} pair_weight[i, j] · losses.dpo_loss(y+ = i, y- = j): the mean DPO loss of the data,
    every cell of the (m, m) table at once. logp (K, n), ref (n,), pair_weight (m, m), beta (K,) -> (K,)."""
    m = pair_weight.shape[0]
    seen, ref_seen = logp[:, :m], ref[:m]
    per_pair = losses.dpo_loss(seen[:, :, None], seen[:, None, :], ref_seen[:, None], ref_seen[None, :],
                               beta[:, None, None])  # (K, m, m)
    return (pair_weight * per_pair).sum((-2, -1))


def _delta(s: dict, key: str) -> float:
    return s[key][-1] - s[key][0]


def run(seed: int = 0, cfg: Config | None = None) -> LabResult:
    cfg = cfg or Config()
    if cfg.beta not in cfg.betas:
        raise ValueError(f"{NAME}: beta={cfg.beta} must be one of betas={cfg.betas}")
    inst = make_instance(cfg, seed)
    phi, r_star, n = inst["phi"], inst["r_star"], cfg.n_responses
    m = cfg.n_seen
    # the data as an (m, m) table: pair_weight[i, j] = share of pairs with y+ = i, y- = j
    pair_weight = torch.bincount(inst["chosen"] * m + inst["rejected"], minlength=m * m).to(DTYPE).view(m, m)
    pair_weight /= cfg.n_pairs
    ref = torch.full((n,), -torch.log(torch.tensor(float(n), dtype=DTYPE)).item(), dtype=DTYPE)
    betas = torch.tensor(cfg.betas * len(FORMS), dtype=DTYPE)  # (2k,), β of each row
    best = n - 1  # φ = [1, 0, …, 0]
    preferred = torch.bincount(inst["chosen"], minlength=n).to(DTYPE) / cfg.n_pairs
    track = {"preferred_mean_logp": preferred,
             "best_logp": torch.nn.functional.one_hot(torch.tensor(best), n).to(DTYPE)}

    def dpo(logp: Tensor) -> Tensor:  # (2k, n) -> (2k,)
        return dpo_table_loss(logp, ref, pair_weight, betas)

    w_hat = torch.zeros(cfg.dim, dtype=DTYPE, requires_grad=True)

    def reward_loss() -> Tensor:
        rewards = phi[:m] @ w_hat
        return (pair_weight * losses.bradley_terry_loss(rewards[:, None], rewards[None, :])).sum()

    minimize(reward_loss, [w_hat])
    r_hat = (phi @ w_hat).detach()

    def rlhf(logp: Tensor) -> Tensor:
        return -losses.kl_regularized_objective(logp, ref, r_hat, betas)

    runs = {"dpo": _train(dpo, cfg, phi, cfg.dpo_iterations, track),
            "rlhf": _train(rlhf, cfg, phi, cfg.rlhf_iterations, track)}
    key = {form: f"{form}_beta_{cfg.beta:g}" for form in FORMS}
    claims = [
        Claim("best_response_is_the_appended_one", "φ = [1, 0, …, 0] (the last response, in no pair) is the best "
              "response (value: 0-based index of argmax r*)", int(r_star.argmax()), "==", best),
        Claim("seen_features_span", f"the first {cfg.n_seen} responses span R^{cfg.dim}, as the paper checks "
              "(value: rank)", int(torch.linalg.matrix_rank(phi[: cfg.n_seen])), "==", cfg.dim),
    ]
    for form in FORMS:
        for method, label in (("rlhf", "RLHF"), ("dpo", "DPO")):
            s = runs[method][key[form]]
            claims.append(Claim(f"{form}_{method}_best_rises", f"{form}, {label}, β = {cfg.beta:g}: log π(best "
                                "response) rises (value: final - initial, nats)", _delta(s, "best_logp"), ">", 0.0))
    for method, label in (("rlhf", "RLHF"), ("dpo", "DPO")):
        s = runs[method][key["softmax"]]
        claims.append(Claim(f"softmax_{method}_preferred_falls", f"softmax, {label}: the preferred responses' mean "
                            "log π falls (value: final - initial)", _delta(s, "preferred_mean_logp"), "<", 0.0))
    soft, norm = runs["dpo"][key["softmax"]], runs["dpo"][key["normalised"]]
    note = ("Fig. 2 middle shows the preferred responses' mean log-prob falling by about 2 nats; the text's "
            "normalised formula cannot do that here, the softmax form does")
    claims += [
        Claim("normalised_dpo_preferred_barely_moves", "normalised (the text's formula), DPO: the preferred "
              "responses' mean log π moves less than a quarter as much as under softmax (value: |Δ normalised| / "
              "|Δ softmax|)", abs(_delta(norm, "preferred_mean_logp")) / abs(_delta(soft, "preferred_mean_logp")),
              "<", 0.25, note=note),
        Claim("normalised_dpo_is_plain_gradient_descent", f"normalised, DPO, β = {cfg.beta:g}: no step ever left "
              "the class ⟨w, φ⟩ > 0, so no positivity correction was applied (value: corrected steps)",
              norm["corrections"], "==", 0),
    ]
    return LabResult(
        name=NAME, section=SECTION, seed=seed,
        settings={**asdict(cfg),
                  "features": "99 rows uniform on the probability simplex (Dirichlet(1)), then [1, 0, …, 0]",
                  "policies": {"softmax": "π ∝ exp⟨w, φ⟩", "normalised": "π = ⟨w, φ⟩ / Σ⟨w, φ⟩"},
                  "w_init": "[1, …, 1] (= uniform π_ref in both forms)",
                  "optimizer": "full-batch plain gradient descent, batched over (form, β)",
                  "reward_model": "linear, BT MLE by L-BFGS from 0", "reward_model_w": w_hat.detach().tolist(),
                  "best_response": best,
                  "best_seen_reward": float(r_star[: cfg.n_seen].max()), "best_reward": float(r_star.max()),
                  "reward_model_error_on_differences": float(((r_hat - r_hat.mean()) - (r_star - r_star.mean()))
                                                             .abs().max()),
                  "w_star": inst["w_star"].tolist()},
        series=runs, claims=claims,
    )


def plot(result: LabResult, path: Path) -> None:
    plt = figures.pyplot()
    beta, betas = result.settings["beta"], result.settings["betas"]
    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    curves = [v for method in ("rlhf", "dpo") for form in FORMS for key in ("preferred_mean_logp", "best_logp")
              for v in result.series[method][f"{form}_beta_{beta:g}"][key]]
    ylim = (min(curves) - 0.2, max(curves) + 0.2)  # one scale for the four curve panels
    for row, form in enumerate(FORMS):
        for col, (method, label) in enumerate((("rlhf", "online RLHF"), ("dpo", "DPO"))):
            ax = axes[row, col]
            s = result.series[method][f"{form}_beta_{beta:g}"]
            ax.plot(s["iteration"], s["preferred_mean_logp"], label="mean log π(preferred)")
            ax.plot(s["iteration"], s["best_logp"], label="log π(best, unseen)")
            ax.set_title(f"{label}, {form}, β = {beta:g}", fontsize=10)
            ax.set_xlabel("iteration")
            ax.set_ylabel("log-probability")
            ax.set_ylim(*ylim)
            ax.legend(fontsize=8)
        ax = axes[row, 2]
        for method, style in (("rlhf", "--"), ("dpo", "-")):
            rows = [result.series[method][f"{form}_beta_{b:g}"] for b in betas]
            ax.semilogx(betas, [_delta(s, "best_logp") for s in rows], style + "o", color="C1", label=f"{method}: best")
            ax.semilogx(betas, [_delta(s, "preferred_mean_logp") for s in rows], style + "o", color="C0",
                        label=f"{method}: preferred mean")
        ax.axhline(0.0, color="grey", lw=0.5)
        ax.set_title(f"{form}: final - initial log π, by β", fontsize=10)
        ax.set_xticks(betas, [f"{b:g}" for b in betas])
        ax.minorticks_off()
        ax.set_xlabel("β")
        ax.legend(fontsize=8)
    figures.save(fig, path)
