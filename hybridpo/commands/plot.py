"""`hybridpo plot RUN_DIR...`: training curves and the Figure-1-style validation-KL plot.

    hybridpo plot runs/gold/dpo-seed0 runs/gold/dpo-seed1 runs/gold/hypo-seed0 runs/gold/hypo-seed1 --out runs/gold/plots

Runs whose folder names differ only by a seed suffix (-seed0, _s1) are one curve: the mean over
seeds with a min/max band.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hybridpo.report import plot_training, plot_validation_kl


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", help="run folders holding metrics.jsonl")
    p.add_argument("--out", default=None, help="folder for the PNGs (default: the first run's parent / plots)")
    p.add_argument("--kl-key", default="eval/kl", help="metric plotted as validation KL (default eval/kl; online runs also log kl)")
    p.add_argument("--x", default="step", choices=["step", "epoch"], help="x axis of the validation-KL plot")


def run(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else Path(args.runs[0]).resolve().parent / "plots"
    print(f"wrote {plot_training(args.runs, out / 'training_curves.png')}")
    # `bench gold` writes per-epoch validation KL to RUN/validation_kl.jsonl; plain runs log eval/kl in metrics.jsonl
    file = "validation_kl.jsonl" if any((Path(r) / "validation_kl.jsonl").exists() for r in args.runs) else "metrics.jsonl"
    try:
        print(f"wrote {plot_validation_kl(args.runs, out / 'validation_kl.png', key=args.kl_key, x=args.x, file=file)}")
    except ValueError as e:
        print(f"validation KL plot skipped: {e}")
    return 0
