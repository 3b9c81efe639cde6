"""`hybridpo data inspect`: load a data config the way training will and print what happened.

    hybridpo data inspect --recipe tldr
    hybridpo data inspect --recipe ultrafeedback chat_template=builtin --show 1
    hybridpo data inspect --config configs/tldr_dpo_tiny.yaml --kind prompts
    hybridpo data inspect --source pairs.jsonl max_prompt_length=256

Prints rows read, kept (train / eval, with groups), dropped (ties, empty, duplicates, over-long)
and truncated (prompts, responses), and optionally the first examples with their token counts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from hybridpo.data import DataConfig, DataError, load_tokenizer, prepare_preferences, prepare_prompts
from hybridpo.data.recipes import shared_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True)
    p = sub.add_parser("inspect", help="load data as training would; print counts kept / dropped / truncated")
    p.add_argument("--config", type=Path, help="a training YAML (its `data:` section) or a YAML of data settings")
    p.add_argument("--recipe", help="start from a recipe: tldr or ultrafeedback")
    p.add_argument("--source", help="a data file, `datasets` folder or dataset name (overrides the config's)")
    p.add_argument("--tokenizer", help="hub name, folder or tokenizer.json (default: the config's model "
                                       "tokenizer, else ../shared/tokenizers/pythia/tokenizer.json)")
    p.add_argument("--kind", choices=["preferences", "prompts"], default="preferences",
                   help="load as preference pairs (default) or as prompts (SFT / sampling)")
    p.add_argument("--show", type=int, default=0, metavar="N", help="print the first N training examples")
    p.add_argument("--no-cache", action="store_true", help="ignore and do not write the tokenised-data cache")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="DataConfig fields, e.g. max_prompt_length=256")


def _settings(args: argparse.Namespace) -> tuple[dict, str | None]:
    data, tokenizer = {}, None
    if args.config:
        raw = yaml.safe_load(args.config.read_text()) or {}
        if not isinstance(raw, dict):
            raise DataError(f"{args.config}: expected a YAML mapping")
        model = raw.get("model") if isinstance(raw.get("model"), dict) else {}
        tokenizer = model.get("tokenizer") or model.get("name_or_path")
        data = dict(raw["data"]) if isinstance(raw.get("data"), dict) else dict(raw)
    if args.recipe:
        data["recipe"] = args.recipe
    if args.source:
        data["source"] = args.source
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise DataError(f"override {item!r}: expected KEY=VALUE")
        data[key] = yaml.safe_load(value)
    if args.no_cache:
        data["use_cache"] = False
    return data, tokenizer


def run(args: argparse.Namespace) -> int:
    try:
        return _inspect(args)
    except DataError as e:
        print(f"error: {e}")
        return 2


def _inspect(args: argparse.Namespace) -> int:
    data, config_tokenizer = _settings(args)
    cfg = DataConfig.from_dict(data)
    tok_path = args.tokenizer or config_tokenizer or str(shared_dir() / "tokenizers" / "pythia" / "tokenizer.json")
    tokenizer = load_tokenizer(tok_path)
    prepared = (prepare_preferences if args.kind == "preferences" else prepare_prompts)(cfg, tokenizer)
    s = prepared.stats
    print(f"source     {cfg.source}" + (f"  (eval: {cfg.eval_source})" if cfg.eval_source else ""))
    print(f"tokenizer  {tok_path}  (eos {tokenizer.eos_token_id}, pad {tokenizer.pad_token_id})")
    print(f"rows read  {s.rows_read}")
    print(f"kept       train {s.train_examples} ({s.train_groups} groups), eval {s.eval_examples} ({s.eval_groups} groups)")
    print(f"dropped    ties {s.dropped_ties}, empty {s.dropped_empty}, duplicates {s.dropped_duplicates}, "
          f"over-long {s.dropped_overlong}; beyond max_rows {s.beyond_max_rows}")
    print(f"truncated  prompts {s.truncated_prompts} (start cut), responses {s.truncated_responses} (end cut, no EOS)")
    print(f"cache      {'hit' if s.from_cache else ('written' if cfg.use_cache else 'off')}")
    for e in prepared.train[: args.show]:
        print("-" * 72)
        print(f"prompt ({len(e.prompt_ids)} tokens): {e.prompt[-300:]!r}")
        if hasattr(e, "chosen"):
            print(f"chosen ({len(e.chosen_ids)} tokens): {e.chosen[:300]!r}")
            print(f"rejected ({len(e.rejected_ids)} tokens): {e.rejected[:300]!r}")
        elif e.reference is not None:
            print(f"reference ({len(e.reference_ids)} tokens): {e.reference[:300]!r}")
    return 0
