"""`hybridpo init-model`: a randomly initialised Pythia-architecture model + a real tokenizer.

No weights can be downloaded on the development machines, so tests, the demo and benchmarks
train from these (e.g. `--size pythia-70m` has EleutherAI/pythia-70m's exact shape).
"""

from __future__ import annotations

import sys


def add_arguments(parser) -> None:
    from hybridpo.models import ARCHS, SIZES

    parser.add_argument("--arch", default="gpt-neox", choices=ARCHS, help="model architecture")
    parser.add_argument("--size", required=True, choices=sorted(SIZES), help="tiny / small (CPU tests) or pythia-70m")
    parser.add_argument("--tokenizer", required=True, help="tokenizer.json, folder or hub name (e.g. ../shared/tokenizers/pythia/tokenizer.json)")
    parser.add_argument("--out", required=True, help="output folder (config, safetensors weights, tokenizer)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random initialisation")


def run(args) -> int:
    from hybridpo.models import init_model

    out = init_model(args.arch, args.size, args.tokenizer, args.out, seed=args.seed)
    print(f"saved a random {args.size} {args.arch} model to {out}", file=sys.stderr)
    return 0
