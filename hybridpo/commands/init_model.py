"""`hybridpo init-model`: a randomly initialised model of one family + a real tokenizer.

No weights can be downloaded on the development machines, so tests, the demo and benchmarks
train from these: `--arch gpt-neox --size pythia-70m` has EleutherAI/pythia-70m's exact shape,
`--arch llama --size smollm2-135m` SmolLM2-135M's; tiny / small are for CPU tests. The shapes
and each family's defaults (tied heads, grouped-query attention) are listed in hybridpo.zoo.ARCHS.
"""

from __future__ import annotations

import sys


def add_arguments(parser) -> None:
    from hybridpo.zoo import ARCHS, SIZES

    sizes = "; ".join(f"{arch}: {', '.join(a.sizes)}" for arch, a in ARCHS.items())
    parser.add_argument("--arch", default="gpt-neox", choices=list(ARCHS), help="model family")
    parser.add_argument("--size", required=True, choices=SIZES, help=f"the shape ({sizes})")
    parser.add_argument("--tokenizer", required=True, help="tokenizer.json, folder or hub name (e.g. ../shared/tokenizers/pythia/tokenizer.json)")
    parser.add_argument("--out", required=True, help="output folder (config, safetensors weights, tokenizer)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random initialisation")


def run(args) -> int:
    from hybridpo.zoo import init_model

    out = init_model(args.arch, args.size, args.tokenizer, args.out, seed=args.seed)
    print(f"saved a random {args.size} {args.arch} model to {out}", file=sys.stderr)
    return 0
