"""What every experiment shares: its typed config (one reader for every YAML: hybridpo.config's),
the methods it trains (each with its own `Config`), a training stage that resumes or skips, and
the wall time of every stage.

An experiment's YAML is its Config's fields plus `methods:`, a mapping of run names to
`MethodSpec`s whose `args` are read against the method's own Config:

    methods:
      dpo:  {method: dpo, args: {beta: 0.1}}
      hypo: {method: hypo, args: {beta: 0.1, lam: 0.25, k: 2, max_new_tokens: 8}}
      online_dpo: {method: online_dpo, reward: rm, args: {k: 4, max_new_tokens: 8}}

Overrides use the same dotted keys as `hybridpo train`: `seeds=3 methods.hypo.args.lam=0.5`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from hybridpo.config import ConfigError, build, config_from_dict, read_yaml
from hybridpo.methods import METHODS
from hybridpo.methods.base import MethodArgs

REWARDS = ("none", "rm", "gold")


@dataclass
class MethodSpec:
    method: str = ""  # the training method, a key of hybridpo.methods.METHODS
    reward: str = "none"  # what scores its samples: "none" (offline pairs / unlabeled samples), "rm" (the experiment's reward model), "gold" (the task's r*)
    args: MethodArgs | None = None  # its options: method_args, read against METHODS[method].Config


def load_config(cls, path: str | Path | None, overrides: list[str] = ()):
    """An experiment config `cls` from YAML + dotted overrides; errors name the file and the key."""
    raw, where = read_yaml(path, overrides)
    methods_raw = raw.pop("methods", None) or {}
    cfg = build(cls, raw, where)
    if not isinstance(methods_raw, dict):
        raise ConfigError(f"{where}: methods must be a mapping of run names to {{method, reward, args}}, got {methods_raw!r}")
    cfg.methods = {name: method_spec(spec, where, f"methods.{name}.") for name, spec in methods_raw.items()}
    return cfg


def method_spec(raw, where: str, prefix: str) -> MethodSpec:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.')} must be a mapping {{method, reward, args}}, got {raw!r}")
    raw = dict(raw)
    args = raw.pop("args", None) or {}
    spec = build(MethodSpec, raw, where, prefix)
    if spec.method not in METHODS:
        raise ConfigError(f"{where}: {prefix}method={spec.method!r}; choose from {sorted(METHODS)}")
    if spec.reward not in REWARDS:
        raise ConfigError(f"{where}: {prefix}reward={spec.reward!r}; choose from {list(REWARDS)}")
    spec.args = build(METHODS[spec.method].Config, args, where, prefix + "args.")
    return spec


def select(cfg, names: str | None) -> None:
    """Keep only the comma-separated run names of `cfg.methods` (the command line's --methods)."""
    if not names:
        return
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = sorted(set(wanted) - set(cfg.methods))
    if unknown:
        raise ConfigError(f"--methods {unknown}: not in the config's methods {sorted(cfg.methods)}")
    cfg.methods = {n: cfg.methods[n] for n in wanted}


def train_stage(run_dir: Path, raw: dict, progress, reward=None) -> Path:
    """`hybridpo train` of a config dict into `run_dir`, unless its final model exists (an
    interrupted experiment continues: a run with checkpoints resumes). Returns RUN/final.
    `reward`: a role that scores the online samples instead of the config's (loop.train)."""
    from hybridpo.loop import train

    final = run_dir / "final"
    if (final / "config.json").exists():
        return final
    raw = dict(raw)
    raw["run"] = {"out_dir": str(run_dir), "progress": False, **raw.get("run", {})}
    progress(f"train {raw['method']} -> {run_dir}")
    result = train(config_from_dict(raw, where=str(run_dir)), resume=(run_dir / "checkpoints").exists(), reward=reward)
    if result.interrupted is not None:  # Ctrl-C / SIGTERM: the run saved a checkpoint; so does the experiment stop
        raise Interrupted(f"{run_dir}: stopped by signal {result.interrupted} at step {result.step}; "
                          "the same command continues the experiment", result.interrupted)
    return final


class Interrupted(RuntimeError):
    """A stage's training run was stopped by a signal (its checkpoint is saved): the experiment stops too."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


def validation_kl(run_dir: Path, steps_per_epoch: int) -> list[dict]:
    """RUN/validation_kl.jsonl from the run's held-out evaluations (`eval/kl`, logged every epoch
    with run.eval_kl_samples > 0): epoch 0 is π_ref itself (KL = 0 exactly), then one row per
    evaluation. The Figure-1 plot reads it (hybridpo.report.plot_validation_kl)."""
    rows = [{"step": 0, "epoch": 0.0, "eval/kl": 0.0}]
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        if "eval/kl" in row:
            rows.append({"step": row["step"], "epoch": row["step"] / steps_per_epoch, "eval/kl": row["eval/kl"],
                         "eval/kl_stderr": row.get("eval/kl_stderr", float("nan"))})
    (run_dir / "validation_kl.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


class Laps:
    """Wall time of each stage, rewritten to OUT/timing.json after every stage. The times add up
    over invocations: an experiment that resumes keeps what its earlier invocations measured (a
    stage found done adds its ~0 s; one interrupted and continued counts both parts)."""

    def __init__(self, out: Path):
        self.path, self.start = out / "timing.json", time.perf_counter()
        self.clock = self.start
        try:
            earlier = json.loads(self.path.read_text())
        except (OSError, ValueError):
            earlier = {}
        earlier = earlier if isinstance(earlier, dict) else {}
        self.earlier_total = float(earlier.pop("total", 0.0) or 0.0)
        self.times = {k: float(v) for k, v in earlier.items() if isinstance(v, (int, float))}

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.times[name] = round(self.times.get(name, 0.0) + now - self.clock, 1)
        self.clock = now
        total = round(self.earlier_total + now - self.start, 1)
        self.path.write_text(json.dumps({**self.times, "total": total}, indent=2) + "\n")
