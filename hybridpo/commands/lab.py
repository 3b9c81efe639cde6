"""`hybridpo lab list | run NAME [--out DIR] [--seed S] | all [--out DIR] [--seed S]`.

Runs the coverage lab's exact experiments (hybridpo/lab/) and prints one progress line per
experiment; the experiments themselves only compute and return results.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from hybridpo.lab.registry import EXPERIMENTS, experiment, run_and_write


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="list the experiments with their paper sections")
    one = sub.add_parser("run", help="run one experiment")
    one.add_argument("name", choices=list(EXPERIMENTS), metavar="NAME", help=f"one of: {', '.join(EXPERIMENTS)}")
    every = sub.add_parser("all", help="run every experiment")
    for p in (one, every):
        p.add_argument("--out", type=Path, default=Path("runs/lab"), help="output folder (default runs/lab)")
        p.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")


def run(args: argparse.Namespace) -> int:
    # The lab's tensors are tiny (at most a few thousand entries): intra-op threads only add
    # synchronisation, and on a busy 2-core machine we measured 10-20x slow-downs with them.
    torch.set_num_threads(1)
    if args.action == "list":
        for name in EXPERIMENTS:
            print(f"{name:<24} {experiment(name).SECTION}")
        return 0
    names = [args.name] if args.action == "run" else list(EXPERIMENTS)
    failed = []
    for i, name in enumerate(names, 1):
        start = time.perf_counter()
        result = run_and_write(name, args.out, seed=args.seed)
        held = sum(c.holds for c in result.claims)
        print(f"[{i}/{len(names)}] {name:<24} {held}/{len(result.claims)} claims hold"
              f"  {time.perf_counter() - start:5.1f}s  -> {args.out / name}", flush=True)
        failed += [f"{name}:{c.name}" for c in result.claims if not c.holds]
    if failed:
        print("claims that do not hold: " + ", ".join(failed))
    return 1 if failed else 0
