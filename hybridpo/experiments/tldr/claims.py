"""The paper's and the lecture's claims, checked on one setting's results: OUT/claims.md and .json.

Each claim compares run labels (the run names without their seed) on one metric, mean ± sample
standard deviation over seeds; the difference's standard error is sqrt(sd_a²/n_a + sd_b²/n_b).
Verdicts, stated in the file:

    ">" (a above b)     reproduced: d > 2 SE;  within noise: 0 < d ≤ 2 SE;  not reproduced: d ≤ 0
    "≥" (a at least b)  reproduced: d ≥ 0;     within noise: -2 SE ≤ d < 0;  not reproduced: d < -2 SE

("<" and "≤" are the same with the sign turned.) With a single seed SE is unknown and the
verdict reads the sign alone. Labels a claim needs that the config did not run are reported as
"not run".
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from hybridpo.report import split_label


def seed_values(results: dict[str, dict], label: str, key: str) -> list[float]:
    return [float(m[key]) for name, m in results.items() if split_label(name)[0] == label
            and isinstance(m.get(key), (int, float)) and not math.isnan(m[key])]


def summary(values: list[float]) -> tuple[float, float, int]:
    n = len(values)
    mean = sum(values) / n if n else float("nan")
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return mean, sd, n


def compare(a: list[float], b: list[float], relation: str) -> dict:
    """The verdict of `a relation b` (relation in >, ≥, <, ≤) from seed values (module docstring)."""
    (ma, sa, na), (mb, sb, nb) = summary(a), summary(b)
    if not na or not nb:
        return {"verdict": "not run"}
    sign = 1.0 if relation in (">", "≥") else -1.0
    d = sign * (ma - mb)
    se = math.sqrt(sa ** 2 / na + sb ** 2 / nb) if na > 1 and nb > 1 else float("nan")
    if relation in (">", "<"):
        verdict = "not reproduced" if d <= 0 else ("reproduced" if math.isnan(se) or d > 2 * se else "within noise")
    else:
        verdict = "reproduced" if d >= 0 else ("within noise" if not math.isnan(se) and d >= -2 * se else "not reproduced")
    return {"verdict": verdict, "stat_a": [ma, sa, na], "stat_b": [mb, sb, nb], "difference": ma - mb, "se": se}


def _fmt(stat) -> str:
    mean, sd, n = stat
    return f"{mean:.3f} ± {sd:.3f} (n={n})" if n > 1 else f"{mean:.3f} (n={n})"


def validation_rise(runs: list[Path], label: str) -> list[float]:
    """Per seed of `label`: validation KL at the last evaluation minus at the first after step 0."""
    out = []
    for r in runs:
        f = r / "validation_kl.jsonl"
        if split_label(r.name)[0] != label or not f.exists():
            continue
        rows = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        if len(rows) >= 3:
            out.append(rows[-1]["eval/kl"] - rows[1]["eval/kl"])
    return out


def write_claims(cfg, results: dict[str, dict], runs: list[Path], path: Path) -> list[dict]:
    """Check each claim on this setting's results; write PATH (markdown) and PATH.json."""
    score = "win_rate" if cfg.setting == "human" else "gold"
    judge = "the evaluator reward model's win rate against the human reference" if cfg.setting == "human" else "r*"
    v = lambda label, key: seed_values(results, label, key)  # noqa: E731
    claims = []

    def claim(title, source, a, b, relation, key, what, values=None):
        va, vb = values if values else (v(a, key), v(b, key))
        c = {"claim": title, "source": source, "a": a, "b": b, "relation": relation, "metric": what, **compare(va, vb, relation)}
        claims.append(c)

    claim("HyPO's KL below DPO's", "paper Table 1", "hypo", "dpo", "<", "kl", "KL(π‖π_ref)")
    claim("HyPO's score at least DPO's", "paper Table 1", "hypo", "dpo", "≥", score, judge)
    claim("online RLHF at least HyPO", "paper §7", "rlhf", "hypo", "≥", score, judge)
    claim("online DPO at least HyPO", "paper §7", "online_dpo", "hypo", "≥", score, judge)
    rises = (validation_rise(runs, "dpo"), [0.0, 0.0])  # against the constant 0: SE = sd / sqrt(n)
    claim("DPO's validation KL rises over the epochs", "paper Figure 1", "dpo", "0", ">", None,
          "validation KL, last evaluation minus the first (half an epoch in)", values=rises)
    claim("HyPO's validation KL rises less than DPO's (stays flat)", "paper Figure 1", "hypo", "dpo", "<", None,
          "validation KL, last evaluation minus the first", values=(validation_rise(runs, "hypo"), validation_rise(runs, "dpo")))
    claim("online DPO above offline DPO (same pairs, steps, optimiser)", "lecture §22.5", "online_dpo", "dpo", ">", score, judge)
    claim("online DPO ranked by DPO's own implicit reward gains nothing over offline DPO", "lecture §22.5.2",
          "online_dpo_implicit", "dpo", "≤", score, judge)
    claim("the separate reward model's online DPO above the implicit reward's", "lecture §22.5.2",
          "online_dpo", "online_dpo_implicit", ">", score, judge)
    claim("online DPO ranked by r* itself (an oracle verifier) above offline DPO", "lecture §22.5 (a verifier that generalises)",
          "online_dpo_gold", "dpo", ">", score, judge)
    claim("HyPO's largest log density ratio on its own samples below DPO's", "paper §4 (coverage)", "hypo", "dpo", "<",
          "coverage/logratio_max", "max over samples of log π(y|x)/π_ref(y|x)")
    claim("DPO's samples outside the data's coverage more than HyPO's", "paper §4 (coverage)", "dpo", "hypo", ">",
          "coverage/outside_data_q05", "share of samples below the data's 5th percentile of per-token log π_ref")

    lines = [f"# Claims, setting `{cfg.setting}`", "",
             "Mean ± standard deviation over seeds. Verdicts: for `>`, reproduced when the difference exceeds 2 "
             "standard errors (sqrt(sd_a²/n_a + sd_b²/n_b)), within noise when it has the predicted sign but not "
             "that margin, not reproduced otherwise; for `≥`, reproduced when a's mean is at least b's, within noise "
             "when it is below by at most 2 standard errors (hybridpo/experiments/tldr/claims.py).", ""]
    for c in claims:
        if c["verdict"] == "not run":
            lines.append(f"- **{c['claim']}** ({c['source']}): not run")
            continue
        b = "0" if c["b"] == "0" else f"{c['b']} {_fmt(c['stat_b'])}"
        lines.append(f"- **{c['claim']}** ({c['source']}): **{c['verdict']}**. {c['metric']}: {c['a']} "
                     f"{_fmt(c['stat_a'])} {c['relation']} {b}; difference {c['difference']:+.3f} (SE {c['se']:.3f})")
    path.write_text("\n".join(lines) + "\n")
    path.with_suffix(".json").write_text(json.dumps(claims, indent=2) + "\n")
    return claims

