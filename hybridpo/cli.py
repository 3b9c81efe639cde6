"""The `hybridpo` command: reads argv and dispatches to one module of `hybridpo.commands`.

Sub-commands are imported only when chosen, so `hybridpo lab` starts without loading
transformers, and a broken optional dependency of one command cannot break another.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module under hybridpo.commands, one-line help). Adding a command is one line here.
COMMANDS: dict[str, tuple[str, str]] = {
    "lab": ("lab", "exact coverage experiments that reproduce the paper's theory (CPU, seconds)"),
    "train": ("train", "train a model (sft, rm, dpo, ipo, hypo, online_dpo, rlhf) from a YAML config or key=value settings"),
    "init-model": ("init_model", "save a randomly initialised model (GPT-NeoX, Llama, Qwen2, Mistral) with a tokenizer"),
    "model": ("model", "get a real checkpoint ready offline (SmolLM2-135M-Instruct) or convert a .gguf file to a folder"),
    "data": ("data", "load a data config as training would; print rows kept / dropped / truncated"),
    "bench": ("bench", "measuring instruments: `bench speed` compares hybridpo with TRL on the same work"),
    "experiment": ("experiment", "multi-stage experiments: `gold` (a task with a known reward), `chat` (SmolLM2, UltraFeedback)"),
    "eval": ("eval", "evaluate policies: KL to the reference, scores, judge win rate; eval.json and a table"),
    "plot": ("plot", "training curves and the Figure-1-style validation-KL plot from run folders"),
    "task": ("task", "write a synthetic gold-reward task's prompts, SFT rows and labelled pairs as JSONL"),
}


def _top_parser() -> argparse.ArgumentParser:
    lines = "\n".join(f"  {name:<12} {help_}" for name, (_, help_) in COMMANDS.items())
    return argparse.ArgumentParser(
        prog="hybridpo",
        description="Preference fine-tuning with cheap online data.",
        epilog=f"commands:\n{lines}\n\nRun `hybridpo COMMAND --help` for a command's options.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    top.add_argument("command", choices=sorted(COMMANDS), metavar="COMMAND")
    top.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0
    ns = top.parse_args(argv[:1])
    module_name, help_ = COMMANDS[ns.command]
    module = importlib.import_module(f"hybridpo.commands.{module_name}")
    parser = argparse.ArgumentParser(prog=f"hybridpo {ns.command}", description=help_)
    module.add_arguments(parser)
    # key=value overrides may come before or after the options (`experiment chat --config X k=v`)
    parse = parser.parse_intermixed_args if getattr(module, "INTERMIXED", False) else parser.parse_args
    args = parse(argv[1:])
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
