"""`hybridpo experiment NAME [--config FILE.yaml] [key=value ...] [--out DIR] [--methods a,b]`.

An experiment is a multi-stage pipeline over the training loop and the evaluation module, with a
typed config (hybridpo.experiments.common): `gold` (the gold-reward task on a random model,
configs/gold/), `chat` (DPO and HyPO on SmolLM2-135M-Instruct with UltraFeedback pairs: `make
demo`, configs/experiments/), `tldr` (the paper's TL;DR setting in miniature on SmolLM2, human or
gold-reward pairs: configs/experiments/tldr_*.yaml). Every stage is skipped when its output exists, so an interrupted
experiment continues where it stopped. Prints the table; OUT holds table.md, plots/, timing.json.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time

# name -> (module with Config and run(cfg, progress) -> table, one-line help)
EXPERIMENTS = {
    "gold": ("hybridpo.experiments.gold", "the gold-reward task: SFT -> BT pairs -> methods x seeds -> table + Figure 1"),
    "chat": ("hybridpo.experiments.chat", "SmolLM2-135M-Instruct on UltraFeedback: reward model, DPO, HyPO -> table, figure"),
    "tldr": ("hybridpo.experiments.tldr", "SmolLM2-135M-Instruct on TL;DR (human or r* pairs): SFT, RMs, every method x seed "
                                          "-> Table 1, coverage, Figure 1, claims"),
}

INTERMIXED = True  # cli.py: positional key=value overrides may follow the options


def add_arguments(p: argparse.ArgumentParser, name: str | None = None) -> None:
    """The command's arguments; with `name` the experiment is fixed (no NAME argument)."""
    if name is None:
        p.add_argument("name", choices=sorted(EXPERIMENTS), help="; ".join(f"{k}: {v[1]}" for k, v in EXPERIMENTS.items()))
    else:
        p.set_defaults(name=name)
    p.add_argument("--config", default=None, help="YAML of the experiment's Config fields (configs/gold/*.yaml, configs/experiments/*.yaml)")
    p.add_argument("--out", default=None, help="experiment folder (default: the config's `out`)")
    p.add_argument("--methods", default=None, help="comma-separated run names of the config's methods to keep")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. seeds=3 methods.hypo.args.lam=0.5")


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    from hybridpo.config import ConfigError
    from hybridpo.data import DataError
    from hybridpo.experiments.common import Interrupted, load_config, select
    from hybridpo.fast.cpu_memory import configure

    package = importlib.import_module(EXPERIMENTS[args.name][0])
    overrides = list(args.overrides) + ([f"out={args.out}"] if args.out else [])
    try:
        cfg = load_config(package.Config, args.config, overrides)
        select(cfg, args.methods)
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    hf_logging.disable_progress_bar()  # one line per stage instead of a bar per checkpoint load / save
    configure("auto")  # the allocator setting `hybridpo train` makes, for the whole experiment process
    start = time.perf_counter()
    runner = importlib.import_module(EXPERIMENTS[args.name][0] + ".run")
    try:
        table = runner.run(cfg, progress=lambda s: print(f"[{time.perf_counter() - start:6.0f}s] {s}", flush=True))
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Interrupted as e:
        print(str(e), file=sys.stderr)
        return 128 + e.signum
    print(table)
    print(f"{cfg.out}: table.md, plots/, timing.json   total {time.perf_counter() - start:.0f}s")
    return 0
