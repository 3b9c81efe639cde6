"""`hybridpo bench MODE`: measuring instruments. MODE picks a module of `hybridpo.bench`.

Adding a mode is one entry in MODES plus a function pair (`add_arguments(parser)`, `run(args) -> int`).
`bench gold` is `hybridpo experiment gold` under its older name.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path


def _speed_arguments(parser: argparse.ArgumentParser) -> None:
    from hybridpo.bench.speed import PLAN

    parser.add_argument("--workload", default="tiny", choices=[*PLAN, "all", "smollm2"],
                        help="which workload to run; all = tiny, tldr and hypo; smollm2 = smollm2-dpo, "
                             "smollm2-hypo and smollm2-rloo (default: tiny)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads in every run (default 2)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="fresh-process runs per variant; the table shows medians (default 3)")
    parser.add_argument("--variants", default="",
                        help="comma-separated variant names to keep (default: all planned for the workload)")
    parser.add_argument("--steps", type=int, default=0, help="override the workload's step count (0: as defined)")
    parser.add_argument("--device", default="cpu", help="where both sides run: cpu (default) or cuda")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                        help="fp32 (default), or bf16 autocast over fp32 weights on both sides")
    parser.add_argument("--random-weights", action="store_true",
                        help="a checkpoint workload's shape with seeded random weights (the GPU check)")
    parser.add_argument("--model", default="",
                        help="a model folder (or zoo name) in place of the workload's checkpoint; with --random-weights "
                             "only its config and tokenizer are read (the GPU check carries just those)")
    parser.add_argument("--out", default="", help="directory for speed.md and speed.json (default: print only)")
    parser.add_argument("--report-from", default="",
                        help="run nothing: re-read the runs a speed.json (or its folder) holds and print the table "
                             "and bars as this version reports them (with --out: rewrite that folder's speed.md)")


def _speed_run(args: argparse.Namespace) -> int:
    from hybridpo.bench.record import machine
    from hybridpo.bench.report import markdown
    from hybridpo.bench.speed import ALL_WORKLOADS, SMOLLM2_WORKLOADS, VARIANTS, run_speed

    if args.report_from:
        return _speed_report(args)
    if args.threads < 1 or args.repeats < 1 or args.steps < 0:
        raise SystemExit("bench speed: --threads and --repeats must be >= 1, --steps >= 0")
    workloads = {"all": ALL_WORKLOADS, "smollm2": SMOLLM2_WORKLOADS}.get(args.workload, [args.workload])
    variants = [v.strip() for v in args.variants.split(",") if v.strip()] or None
    for v in variants or []:
        if v not in VARIANTS:
            raise SystemExit(f"bench speed: unknown variant {v!r}; choose from {sorted(VARIANTS)}")
    overrides = {"steps": args.steps} if args.steps else {}
    if args.device != "cpu" or args.precision != "fp32":
        overrides.update(device=args.device, precision=args.precision)
    if args.random_weights:
        overrides["weights"] = "random"
    if args.model:
        overrides["model"] = args.model
    peak, rows = run_speed(workloads, args.threads, args.repeats, variants, overrides or None,
                           progress=lambda line: print(line, flush=True))
    where = f"{args.device}, {args.precision}" + (", random weights" if args.random_weights else "")
    text = markdown(peak, args.threads, args.repeats, rows, machine(args.device), where)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "speed.md").write_text(text)
        payload = {"peak_flops": peak, "threads": args.threads, "repeats": args.repeats, "machine": machine(args.device),
                   "device": args.device, "precision": args.precision, "random_weights": args.random_weights,
                   "rows": [asdict(r) for r in rows]}
        (out / "speed.json").write_text(json.dumps(payload, indent=1))
        print(f"wrote {out / 'speed.md'} and {out / 'speed.json'}")
    return 0


def _speed_report(args: argparse.Namespace) -> int:
    from hybridpo.bench.report import markdown
    from hybridpo.bench.speed import resummarize

    path = Path(args.report_from)
    path = path / "speed.json" if path.is_dir() else path
    try:
        payload = json.loads(path.read_text())
        rows = resummarize(payload)
        where = f"{payload['device']}, {payload['precision']}" + (", random weights" if payload.get("random_weights") else "")
        text = markdown(payload["peak_flops"], payload["threads"], payload["repeats"], rows, payload["machine"], where)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise SystemExit(f"bench speed --report-from: {path}: not a speed.json that `bench speed --out` wrote "
                         f"({type(e).__name__}: {e})")
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "speed.md").write_text(text)
        print(f"wrote {out / 'speed.md'}")
    return 0


def _gold_arguments(parser: argparse.ArgumentParser) -> None:
    from hybridpo.commands import experiment

    experiment.add_arguments(parser, name="gold")


def _gold_run(args: argparse.Namespace) -> int:
    from hybridpo.commands import experiment

    return experiment.run(args)


# mode -> (add_arguments, run, one-line help)
MODES = {
    "speed": (_speed_arguments, _speed_run, "hybridpo vs TRL 1.16 on the same work: throughput, memory, FLOP/s"),
    "gold": (_gold_arguments, _gold_run, "= hybridpo experiment gold: the gold-reward benchmark (SFT -> BT pairs -> methods x seeds -> table, Figure 1)"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="mode", required=True, metavar="MODE")
    for name, (add, _, help_) in MODES.items():
        add(sub.add_parser(name, help=help_, description=help_))


def run(args: argparse.Namespace) -> int:
    return MODES[args.mode][1](args)
