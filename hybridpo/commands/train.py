"""`hybridpo train [--config FILE.yaml] [key=value ...]` and `hybridpo train --resume RUN_DIR`.

Without --config the run is the defaults plus the overrides, e.g.
`hybridpo train method=dpo model.name_or_path=MODEL data.source=pairs.jsonl`.

Exit status: 0 when the run finished; 128 + signal number when SIGTERM / Ctrl-C stopped it (a
checkpoint was saved; `--resume` continues it); 1 for a non-finite loss (the last good checkpoint
is kept) or a configuration / data error (the message names the file and the key or row).
"""

from __future__ import annotations

import sys
from pathlib import Path

INTERMIXED = True  # cli.py: positional key=value overrides may follow the options


def add_arguments(parser) -> None:
    parser.add_argument("--config", help="YAML config (see configs/); every field is documented in hybridpo/config.py; "
                                          "without it the run is the defaults plus the key=value overrides")
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its latest checkpoint")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. optim.lr=1e-5 method_args.beta=0.1")


def run(args) -> int:
    from hybridpo.config import ConfigError, load_config
    from hybridpo.data import DataError

    if args.config and args.resume:
        print("error: give --config FILE.yaml (and/or key=value overrides) or --resume RUN_DIR, not both", file=sys.stderr)
        return 2
    if not (args.config or args.resume or args.overrides):
        print("error: give --config FILE.yaml, key=value settings (e.g. method=dpo model.name_or_path=... "
              "data.source=...), or --resume RUN_DIR", file=sys.stderr)
        return 2
    try:
        if args.resume:
            if args.overrides:
                print("error: --resume takes no overrides: the run continues with its saved config", file=sys.stderr)
                return 2
            path = Path(args.resume) / "config.yaml"
            cfg = load_config(path, [f"run.out_dir={args.resume}"])
        else:
            cfg = load_config(args.config, args.overrides)
    except (ConfigError, DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1

    from hybridpo.fast.cpu_memory import configure
    from hybridpo.loop import NonFiniteLoss, train

    configure(cfg.speed.keep_freed_memory)  # a process-wide setting: made here, at the command line
    try:
        result = train(cfg, resume=bool(args.resume))
    except (NonFiniteLoss, ConfigError, DataError, FileExistsError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if result.interrupted is not None:
        return 128 + int(result.interrupted)
    print(f"done: {result.step} steps; model in {result.run_dir / 'final'}", file=sys.stderr)
    return 0
