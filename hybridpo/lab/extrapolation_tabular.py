"""extrapolation-tabular: paper §6.1.2, Fig. 2 right. Without function approximation, does DPO
move mass to responses outside the data?

|Y| = 500, r* ~ U(-10, 10), 10,000 Bradley-Terry pairs on the first 250 responses, π_ref uniform,
5,000 full-batch DPO iterations (losses.dpo_loss); series: mean probability of the 250
out-of-distribution (OOD) responses. Four settings side by side:

- softmax logits + plain SGD: the DPO gradient only touches in-data logits and sums to zero over
  them (each pair pushes +g on y+ and -g on y-), so Σ_in θ is conserved while the in-data logits
  spread; by Jensen Σ_in e^θ ≥ 250·e^{mean θ} grows, so OOD mass can only fall. The paper's rising
  curve cannot come from this setting.
- softmax logits + Adam: per-coordinate scaling breaks the zero-sum, but winners' logits race up.
- normalised linear π(y) = w_y / Σ w (the form §6.1.1 writes, tabular φ = one-hot, w ≥ 0) + plain
  SGD: ∂ log w_y / ∂ w_y = 1/w_y, so losers' weights fall faster than winners' rise, Σ_in w shrinks
  and OOD mass rises: the paper's curve, at step sizes below the point where a loser's weight hits
  0 and its 1/w gradient explodes.
- normalised linear + Adam.

RLHF (tabular reward model by losses.bradley_terry_loss, then ascent on the exact
losses.kl_regularized_objective) and HyPO (DPO + λ·exact KL(π‖π_ref) via losses.kl_divergence) run
on the same data in the normalised-linear + SGD setting.
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

NAME = "extrapolation-tabular"
SECTION = "§6.1.2, Fig. 2 right"
NOTE = ("paper Fig. 2 right shows OOD probability rising under DPO; with softmax logits and plain "
        "SGD it provably cannot (zero-sum logit updates + Jensen); it rises with the normalised linear "
        "form π = w/Σw and plain SGD")


@dataclass
class Config:
    n_responses: int = 500  # |Y|
    n_seen: int = 250  # pairs only on the first n_seen responses
    n_pairs: int = 10_000  # Bradley-Terry preference pairs
    reward_range: float = 10.0  # r* ~ U(-range, range)
    beta: float = 0.1  # KL strength β of DPO / RLHF / HyPO
    iterations: int = 5_000  # full-batch steps of every run
    sgd_lr: float = 0.2  # plain-SGD step, both parameterisations (0.3+ blows up the linear form)
    adam_lr: float = 0.01  # Adam step, both parameterisations
    min_weight: float = 1e-12  # the linear form's weights are projected onto w ≥ min_weight
    hypo_lambda: float = 0.1  # weight of HyPO's exact KL term
    record_every: int = 50  # iterations between points of the series


def _logprobs(param: Tensor, form: str) -> Tensor:
    if form == "softmax":
        return torch.log_softmax(param, dim=-1)
    return torch.log(param) - torch.log(param.sum())  # π(y) = w_y / Σ w


# the six runs: (name, parameterisation, optimiser, objective)
RUNS = (
    ("dpo_softmax_sgd", "softmax", "sgd", "dpo"),
    ("dpo_softmax_adam", "softmax", "adam", "dpo"),
    ("dpo_linear_sgd", "linear", "sgd", "dpo"),
    ("dpo_linear_adam", "linear", "adam", "dpo"),
    ("rlhf_linear_sgd", "linear", "sgd", "rlhf"),
    ("hypo_linear_sgd", "linear", "sgd", "hypo"),
)


def _train(objectives: dict, cfg: Config) -> dict[str, dict[str, list[float]]]:
    """Every run of RUNS side by side: one weight vector per run, one backward pass per step, each
    objective evaluated once on the stacked rows that use it (objectives[kind]: (K, n) -> (K,))."""
    n, m = cfg.n_responses, cfg.n_seen
    params = [(torch.zeros(n, dtype=DTYPE) if form == "softmax" else torch.ones(n, dtype=DTYPE)).requires_grad_()
              for _, form, _, _ in RUNS]
    by_opt = {o: [p for p, (_, _, opt, _) in zip(params, RUNS) if opt == o] for o in ("sgd", "adam")}
    optimizers = [torch.optim.SGD(by_opt["sgd"], lr=cfg.sgd_lr), torch.optim.Adam(by_opt["adam"], lr=cfg.adam_lr)]
    rows = {kind: [i for i, run in enumerate(RUNS) if run[3] == kind] for kind in objectives}
    out = {name: {"iteration": [], "ood_mean_prob": [], "in_logit_sum": []} for name, *_ in RUNS}
    for it in range(cfg.iterations + 1):
        logp = torch.stack([_logprobs(p, form) for p, (_, form, _, _) in zip(params, RUNS)])  # (runs, n)
        if it % cfg.record_every == 0 or it == cfg.iterations:
            ood = logp.detach()[:, m:].exp().mean(-1).tolist()
            for i, (name, *_) in enumerate(RUNS):
                out[name]["iteration"].append(it)
                out[name]["ood_mean_prob"].append(ood[i])
                out[name]["in_logit_sum"].append(float(params[i].detach()[:m].sum()))
        if it == cfg.iterations:
            break
        per_kind = {kind: objectives[kind](logp[idx]) for kind, idx in rows.items()}
        loss = sum(v.sum() for v in per_kind.values())
        if not torch.isfinite(loss):
            bad = [RUNS[i][0] for kind, idx in rows.items() for i, v in zip(idx, per_kind[kind])
                   if not torch.isfinite(v)]
            raise FloatingPointError(f"{NAME}: loss of {bad} is not finite at iteration {it}")
        for opt in optimizers:
            opt.zero_grad()
        loss.backward()
        for opt in optimizers:
            opt.step()
        with torch.no_grad():
            for p, (_, form, _, _) in zip(params, RUNS):
                if form == "linear":
                    p.clamp_(min=cfg.min_weight)
    return out


def run(seed: int = 0, cfg: Config | None = None) -> LabResult:
    cfg = cfg or Config()
    gen = generator(seed)
    n, m, beta = cfg.n_responses, cfg.n_seen, cfg.beta
    r_star = (2 * torch.rand(n, generator=gen, dtype=DTYPE) - 1) * cfg.reward_range
    chosen, rejected = bt_pairs(r_star, torch.arange(m), cfg.n_pairs, gen)
    c, r, weight = count_pairs(chosen, rejected, n)  # distinct (y+, y-) pairs, weight = count / N
    ref = torch.full((n,), -torch.log(torch.tensor(float(n))).item(), dtype=DTYPE)

    def dpo(logp: Tensor) -> Tensor:  # (K, n) -> (K,)
        return (weight * losses.dpo_loss(logp[:, c], logp[:, r], ref[c], ref[r], beta)).sum(-1)

    def hypo(logp: Tensor) -> Tensor:
        return dpo(logp) + cfg.hypo_lambda * losses.kl_divergence(logp, ref)

    r_hat = torch.zeros(n, dtype=DTYPE, requires_grad=True)  # unseen responses keep r̂ = 0
    minimize(lambda: (weight * losses.bradley_terry_loss(r_hat[c], r_hat[r])).sum(), [r_hat])
    r_hat = r_hat.detach()

    def rlhf(logp: Tensor) -> Tensor:
        return -losses.kl_regularized_objective(logp, ref, r_hat, beta)

    runs = _train({"dpo": dpo, "rlhf": rlhf, "hypo": hypo}, cfg)
    uniform = 1.0 / n

    def final(key: str) -> float:
        return runs[key]["ood_mean_prob"][-1]

    linear = runs["dpo_linear_sgd"]["ood_mean_prob"]
    claims = [
        Claim("softmax_sgd_conserves_in_data_logit_sum",
              "softmax + SGD: Σ of in-data logits is conserved (value: max |change|)",
              max(abs(v) for v in runs["dpo_softmax_sgd"]["in_logit_sum"]), "<", 1e-8),
        Claim("softmax_sgd_ood_does_not_rise", "softmax + SGD: OOD mean probability ends below uniform "
              "(value: final / (1/|Y|))", final("dpo_softmax_sgd") / uniform, "<", 1.0, note=NOTE),
        Claim("softmax_sgd_ood_never_above_uniform", "softmax + SGD: OOD mean probability never exceeds its start "
              "(value: max over the run / (1/|Y|))", max(runs["dpo_softmax_sgd"]["ood_mean_prob"]) / uniform, "<=",
              1.0 + 1e-12),
        Claim("softmax_adam_ood_falls", "softmax + Adam: OOD mean probability falls (value: final / (1/|Y|))",
              final("dpo_softmax_adam") / uniform, "<", 1.0),
        Claim("linear_sgd_ood_rises", "normalised linear + SGD: OOD mean probability rises, the paper's curve "
              "(value: final / (1/|Y|))", final("dpo_linear_sgd") / uniform, ">", 1.0, note=NOTE),
        Claim("linear_sgd_ood_rises_monotonically", "normalised linear + SGD: the rise is monotone "
              "(value: largest step-to-step drop)", max(a - b for a, b in zip(linear, linear[1:])), "<=", 0.0),
        Claim("linear_adam_ood_falls", "normalised linear + Adam: OOD mean probability falls (value: final / (1/|Y|))",
              final("dpo_linear_adam") / uniform, "<", 1.0),
        Claim("rlhf_ood_falls", "RLHF (unseen responses keep r̂ = 0) moves mass onto the data's best responses: "
              "OOD mean probability falls (value: final / (1/|Y|))", final("rlhf_linear_sgd") / uniform, "<", 1.0),
        Claim("hypo_below_dpo", "HyPO's KL term keeps OOD mass closer to π_ref than DPO's, same setting "
              "(value: |HyPO final - uniform| - |DPO final - uniform|)",
              abs(final("hypo_linear_sgd") - uniform) - abs(final("dpo_linear_sgd") - uniform), "<", 0.0),
    ]
    return LabResult(
        name=NAME, section=SECTION, seed=seed,
        settings={**asdict(cfg), "pi_ref": "uniform", "hypo_kl": "exact KL via losses.kl_divergence (autograd)",
                  "reward_model": "tabular BT MLE by L-BFGS from 0 (unseen responses keep r̂ = 0)",
                  "data": "sampled pairs, full-batch losses weighted by pair counts"},
        series=runs, claims=claims,
    )


def plot(result: LabResult, path: Path) -> None:
    plt = figures.pyplot()
    n = result.settings["n_responses"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    panels = [
        (axes[0], [k for k in result.series if k.startswith("dpo")], "DPO: parameterisation × optimiser (log)"),
        (axes[1], ["dpo_softmax_sgd", "dpo_linear_sgd"], "DPO, plain SGD: softmax falls, w/Σw rises"),
        (axes[2], ["dpo_linear_sgd", "hypo_linear_sgd", "rlhf_linear_sgd"], "w/Σw + SGD: DPO vs HyPO vs RLHF"),
    ]
    for ax, keys, title in panels:
        for key in keys:
            s = result.series[key]
            ax.plot(s["iteration"], [max(p * n, 1e-4) for p in s["ood_mean_prob"]], label=key)
        ax.axhline(1.0, color="grey", lw=0.5)
        ax.set_xlabel("iteration")
        ax.set_ylabel("mean OOD probability × |Y| (1 = uniform)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7)
    axes[0].set_yscale("log")
    figures.save(fig, path)
