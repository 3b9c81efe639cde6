"""Tables and figures from evaluation results and run folders (no model code here).

- `aggregate` + `markdown_table`: runs grouped by label (the run folder's name without its seed
  suffix: `dpo-seed0`, `dpo_s1` -> `dpo`), every metric as mean ± std over the group's seeds
  (sample std, n-1; "±0" style is never faked for n = 1: the std column is "n/a").
- `plot_training`: loss, reward margins, KL and reward against step, one line per run.
- `plot_validation_kl`: validation KL against step (or epoch) for several runs on one figure,
  the mean (or, as the paper's Figure 1, the median) over seeds as a line and the min/max over
  seeds as a band.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

# The columns of the Table-1-style table, in order, when present.
TABLE_KEYS = ("win_rate", "gold", "gold/diff", "rm", "rm/diff", "kl", "forward_kl/reference",
              "logps/chosen", "logps/rejected", "response_length", "eos_rate")
_SEED_RE = re.compile(r"^(.*?)[-_.]?(?:seed|s)(\d+)$")


def split_label(name: str) -> tuple[str, int | None]:
    """"dpo-seed2" -> ("dpo", 2); "hypo_s0" -> ("hypo", 0); "sft" -> ("sft", None)."""
    m = _SEED_RE.match(name)
    if m and m.group(1):
        return m.group(1), int(m.group(2))
    return name, None


def read_metrics(run_dir: str | Path, file: str = "metrics.jsonl") -> list[dict]:
    """The rows of RUN/metrics.jsonl (or another JSONL of the run); ValueError naming file and line for a bad row."""
    path = Path(run_dir) / file
    if not path.exists():
        raise FileNotFoundError(f"{path}: no {file} in this run folder")
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{i}: not JSON ({e.msg})") from None
        if not isinstance(row, dict) or "step" not in row:
            raise ValueError(f"{path}:{i}: a metrics row needs a 'step' field")
        rows.append(row)
    return rows


def aggregate(results: dict[str, dict], keys=TABLE_KEYS) -> list[dict]:
    """{run name: metrics} -> one row per label: {"label", "n", key: (mean, std | None)}."""
    groups: dict[str, list[dict]] = {}
    for name, metrics in results.items():
        groups.setdefault(split_label(name)[0], []).append(metrics)
    rows = []
    for label, runs in groups.items():
        row: dict = {"label": label, "n": len(runs)}
        for k in keys:
            vals = [float(r[k]) for r in runs if isinstance(r.get(k), (int, float)) and not math.isnan(r[k])]
            if not vals:
                continue
            mean = sum(vals) / len(vals)
            std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else None
            row[k] = (mean, std)
        rows.append(row)
    return rows


def markdown_table(rows: list[dict], keys=TABLE_KEYS) -> str:
    """The aggregated rows as a markdown table, "mean ± std" cells (std over seeds)."""
    cols = [k for k in keys if any(k in r for r in rows)]
    lines = ["| run | seeds | " + " | ".join(cols) + " |", "|---|---:|" + "---:|" * len(cols)]
    for r in rows:
        cells = []
        for k in cols:
            if k not in r:
                cells.append("")
                continue
            mean, std = r[k]
            cells.append(f"{mean:.3f}" + (f" ± {std:.3f}" if std is not None else ""))
        lines.append(f"| {r['label']} | {r['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_training(run_dirs: list[str | Path], out: str | Path,
                  keys=("loss", "rewards/margins", "kl", "reward")) -> Path:
    """One panel per key (loss, margins, KL, reward) against step, one line per run, a colour per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4), squeeze=False)
    labels = list(dict.fromkeys(split_label(Path(d).name)[0] for d in run_dirs))
    color = {lab: f"C{i % 10}" for i, lab in enumerate(labels)}  # one colour per method, seeds share it
    runs = [(split_label(Path(d).name)[0], read_metrics(d)) for d in run_dirs]
    for ax, key in zip(axes[0], keys):
        drawn, named = 0, set()
        for label, rows in runs:
            pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float))]
            if pts:
                ax.plot(*zip(*pts), color=color[label], lw=1.0, alpha=0.8, label=None if label in named else label)
                named.add(label)
                drawn += 1
        ax.set_title(key)
        ax.set_xlabel("step")
        if drawn:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "not logged", ha="center", va="center", transform=ax.transAxes, color="gray")
    fig.tight_layout()
    return _save(fig, out)


def validation_series(run_dir: str | Path, key: str, x: str = "step", file: str = "metrics.jsonl") -> list[tuple[float, float]]:
    """(x, value) of every row of RUN/file carrying `key` (e.g. eval/kl), in file order."""
    return [(float(r[x]), float(r[key])) for r in read_metrics(run_dir, file)
            if isinstance(r.get(key), (int, float)) and x in r]


def plot_validation_kl(run_dirs: list[str | Path], out: str | Path, key: str = "eval/kl", x: str = "step",
                       file: str = "metrics.jsonl", center: str = "mean") -> Path:
    """Figure 1 style: per label, the mean (center="mean") or median (center="median", the paper's
    Figure 1) over seeds as a line and the min/max band over seeds."""
    if center not in ("mean", "median"):
        raise ValueError(f"center={center!r}; choose from ['mean', 'median']")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[dict[float, float]]] = {}
    for d in run_dirs:
        if not (Path(d) / file).exists():
            continue
        series = dict(validation_series(d, key, x, file))
        if series:
            groups.setdefault(split_label(Path(d).name)[0], []).append(series)
    if not groups:
        raise ValueError(f"no run in {[str(d) for d in run_dirs]} logged {key!r}; nothing to plot")
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for label, seeds in groups.items():
        xs = sorted(set.intersection(*(set(s) for s in seeds)))  # points every seed has
        vals = [[s[t] for s in seeds] for t in xs]
        mid = [sum(v) / len(v) if center == "mean" else _median(v) for v in vals]
        line, = ax.plot(xs, mid, marker="o", ms=3, label=f"{label} ({center} of {len(seeds)})")
        if len(seeds) > 1:
            ax.fill_between(xs, [min(v) for v in vals], [max(v) for v in vals], color=line.get_color(), alpha=0.2)
    ax.set_xlabel(x)
    ax.set_ylabel(f"{key}  (KL(π‖π_ref), nats)")
    ax.set_title("validation KL over training (band: min/max over seeds)")
    ax.legend()
    fig.tight_layout()
    return _save(fig, out)


def _median(values: list[float]) -> float:
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def _save(fig, out) -> Path:
    import matplotlib.pyplot as plt

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
