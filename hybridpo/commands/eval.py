"""`hybridpo eval MODEL_OR_RUN...`: the evaluation metrics of hybridpo.evaluate for one or more
policies, each folder's eval.json / eval.md / generations.jsonl, and one table over all of them
(mean ± std over seeds for runs named like dpo-seed0, dpo-seed1).

    hybridpo eval runs/gold/dpo-seed0 runs/gold/hypo-seed0 --ref runs/gold/sft/final \\
        --data runs/gold/data/sft_eval.jsonl --pairs runs/gold/data/pairs_eval.jsonl \\
        --task gold --judge gold --out runs/gold/eval

A run folder is read as its final/ model, and its config.yaml names the reference when --ref is
not given.

Rendering: the --data and --pairs rows (strings or lists of {role, content} messages, any format
training reads) become token ids through the data layer (hybridpo.data.prepare_prompts /
prepare_preferences) with the rendering settings of hybridpo.data.RENDERING_FIELDS: prompt
template, response prefix and spacing, chat template, truncation limits, BOS. By default they are
the run's own, from the data section of its config.yaml (a run folder, its final/, or a checkpoint's
model/ inside it), so the policy is evaluated on prompts rendered as in training: a chat run's
generations start after the assistant turn marker, and the KL, log-probs and scores are taken on
the token ids training used. Each rendering flag (--as-chat, --prompt-template, --max-prompt-length,
...) overrides one setting; a model folder outside a run takes the flags alone (DataConfig's
defaults otherwise: plain text), as does --rendering defaults. Evaluation truncates, never drops,
an over-long row. eval.json records `rendering` (the settings applied), `rendering_from` (the
config.yaml, or null) and `rendering_flags` (the settings the flags set).

Coverage (--coverage, on by default with --kl-samples > 0): eval.json's coverage/... metrics
(hybridpo.evaluate.coverage_metrics) on the KL samples: is π's mass where π_ref and the offline data
(--pairs' responses, else the references) put theirs, in the sense of the paper's Assumptions 4.1-4.2.

Reward-model scores (--reward-model) are taken on the token ids the policy was fed and wrote: the
rendered, truncated prompt ids, and a generation's ids ending with EOS only where it emitted one.

π_ref without a second model: when --ref is not given and a model is a LoRA adapter whose base is
the reference (a peft folder, or a run with model.finetune=lora: its final/ when saved unmerged,
else the adapter in its latest checkpoint, which holds the final weights), π_ref is that policy
with its adapter switched off (hybridpo.models.Reference "disabled_adapter", as in training), so
only the base weights are loaded, once. A full fine-tune, an explicit --ref, or an adapter on
another base loads π_ref as a separate model (once for all models). eval.json records which in
`reference_kind` ("disabled_adapter" or "separate").

The API judge reads its key from the environment variable named by --api-key-env
(default OPENAI_API_KEY); the key is passed to the judge and never printed or written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from hybridpo.data import RENDERING_FIELDS, DataConfig, DataError

JUDGES = ("gold", "rm", "api", "none")
RENDERINGS = ("run", "defaults")  # --rendering: the run's config.yaml data section, or DataConfig's defaults

# DataConfig rendering field -> (flag type, help); every field of RENDERING_FIELDS has its flag.
RENDER_FLAGS: dict[str, tuple[type, str]] = {
    "prompt_template": (str, "template of string prompts, with {prompt}; TL;DR: $'{prompt}\\nTL;DR:' in bash "
                             "(a real newline)"),
    "response_prefix": (str, "removed from the start of string responses (TL;DR: 'TL;DR:')"),
    "normalize_response_space": (bool, "strip each string response and start it with exactly one space"),
    "as_chat": (bool, "render string rows as one user turn + one assistant turn with the chat template"),
    "chat_template": (str, "'tokenizer' (its own), 'builtin' (HH-style Human/Assistant) or a Jinja template"),
    "implicit_prompt_marker": (str, "implicit-prompt rows: the prompt ends after the last marker both share"),
    "max_prompt_length": (int, "prompt tokens kept (their END is kept); 'none': no limit"),
    "max_response_length": (int, "response tokens kept, EOS included; 'none': no limit"),
    "max_length": (int, "prompt + response tokens kept; 'none': no limit"),
    "add_bos": (bool, "prepend the tokenizer's BOS to prompts that lack it"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="+", help="run folders (their final/ model) or model folders / hub names")
    p.add_argument("--ref", default=None,
                   help="π_ref (model folder or hub name), loaded as a separate model; default: the run's config.yaml "
                        "model (or a peft folder's base), and for a LoRA adapter on it the policy with its adapter "
                        "disabled (no second copy of the weights)")
    p.add_argument("--data", required=True,
                   help="validation prompts with references: SFT rows (prompt, completion), preference rows (reference = "
                        "chosen) or prompt-only rows; strings or lists of {role, content} messages")
    p.add_argument("--pairs", default=None, help="validation preference pairs (prompt, chosen, rejected; strings or "
                                                  "messages) for logps/chosen|rejected")
    p.add_argument("--tokenizer", default=None, help="tokenizer (default: the first model's folder)")
    p.add_argument("--task", default=None, choices=["gold"], help="a synthetic task whose gold reward is scored ('gold')")
    p.add_argument("--judge", default="none", choices=JUDGES, help="win-rate judge against the references")
    p.add_argument("--reward-model", default=None, help="reward model folder (`rm` run's final/): adds the rm score")
    p.add_argument("--api-base-url", default=None, help="OpenAI-compatible API root for --judge api")
    p.add_argument("--api-model", default="gpt-4", help="judge model for --judge api")
    p.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the API key")
    p.add_argument("--judge-cache", default=None, help="verdict cache folder (default OUT/judge_cache)")
    p.add_argument("--temperature", type=float, default=0.01, help="generation temperature (paper TL;DR: 0.01)")
    p.add_argument("--max-new-tokens", type=int, default=53, help="generation length (paper TL;DR: 53)")
    p.add_argument("--kl-samples", type=int, default=2, help="samples per prompt for the reverse-KL estimate")
    p.add_argument("--coverage", action=argparse.BooleanOptionalAction, default=True,
                   help="coverage diagnostics on the KL samples (eval.json coverage/...: the log density ratio "
                        "log π/π_ref of π's samples, its quantiles, max and share above log 10 / log 100, and how "
                        "likely the samples are under π_ref against the data's own responses); needs --kl-samples > 0")
    p.add_argument("--max-prompts", type=int, default=0, help="evaluate the first N prompts (0 = all)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output folder: OUT/<model>/eval.json ..., OUT/eval.md, OUT/summary.json")
    g = p.add_argument_group(
        "rendering", "how --data / --pairs rows become token ids (hybridpo.data.DataConfig fields); default: as the run "
                     "was trained, from its config.yaml; each flag overrides one setting")
    g.add_argument("--rendering", choices=RENDERINGS, default="run",
                   help="start from the run's config.yaml data section ('run', default; a model outside a run has none) "
                        "or from DataConfig's defaults, plain text ('defaults')")
    for name, (kind, help_) in RENDER_FLAGS.items():
        flag = "--" + name.replace("_", "-")
        if kind is bool:
            g.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_)
        else:
            g.add_argument(flag, dest=name, type=_int_or_none if kind is int else str, default=argparse.SUPPRESS,
                           metavar="N" if kind is int else "TEXT", help=help_)


def _int_or_none(text: str) -> int | None:
    if text.lower() in ("none", "null"):
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number or 'none', got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    try:
        return _evaluate_all(args)
    except DataError as e:  # a bad data file or rendering setting: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 1


def _evaluate_all(args: argparse.Namespace) -> int:
    import torch

    from hybridpo.data import load_tokenizer
    from hybridpo.evaluate import EvalConfig, evaluate
    from hybridpo.models import Reference
    from hybridpo.report import aggregate, markdown_table

    torch.manual_seed(args.seed)
    sources = [_resolve(m) for m in args.models]
    ref_path = args.ref or sources[0].ref
    if not ref_path:
        raise SystemExit("hybridpo eval: no --ref given, and the first model is neither a run whose config.yaml "
                         "names one nor a peft adapter")
    tokenizer = load_tokenizer(args.tokenizer or str(sources[0].path))
    renderings = {src.name: _rendering(src, args, tokenizer) for src in sources}  # checked before any model loads
    loaded: dict[str, _EvalData] = {}  # the eval files tokenised once per distinct rendering
    for rendering in renderings.values():
        key = json.dumps(rendering.settings, sort_keys=True)
        if key not in loaded:
            loaded[key] = _load_eval_data(args, tokenizer, rendering.settings)
    if len(loaded) > 1:
        print("note: the models were trained with different renderings; each is evaluated with its own "
              "(`rendering` in its eval.json)", file=sys.stderr)
    rm_config = _run_config(Path(args.reward_model)) if args.reward_model and Path(args.reward_model).exists() else None
    rm_rendering = _run_rendering(rm_config) if rm_config is not None else None
    if rm_rendering is not None and any(r.settings != rm_rendering for r in renderings.values()):
        print(f"note: the reward model's run ({rm_config}) rendered its data otherwise than the policy; its scores "
              "are taken on the policy's token ids", file=sys.stderr)
    scorers, judge = _scorers_and_judge(args, tokenizer)
    out = Path(args.out)
    results = {}
    separate_ref = None  # π_ref as its own model, loaded when the first model needs it
    for src in sources:
        name, path = src.name, src.path
        rendering = renderings[name]
        data = loaded[json.dumps(rendering.settings, sort_keys=True)]
        if args.ref is None and src.adapter is not None and _same_model(_adapter_base(src.adapter), ref_path):
            policy, kind, path = _load_with_disabled_adapter(src.adapter), "disabled_adapter", src.adapter
            ref = Reference(kind, policy, disable_adapter_of=policy)  # π_ref = the base: one copy of the weights
        else:
            if separate_ref is None:
                separate_ref = _load_lm(ref_path)
            policy, ref, kind = _load_lm(str(path)), separate_ref, "separate"
        cfg = EvalConfig(temperature=args.temperature, max_new_tokens=args.max_new_tokens, kl_samples=args.kl_samples,
                         batch_size=args.batch_size, max_prompts=args.max_prompts, seed=args.seed, generator_name=name,
                         coverage=args.coverage)
        res = evaluate(policy, ref, tokenizer, data.prompts, pairs=data.pairs, judge=judge, scorers=scorers, cfg=cfg)
        res.metrics.update(model=str(path), reference=str(ref_path), reference_kind=kind,
                           rendering=rendering.settings, rendering_from=rendering.origin, rendering_flags=rendering.flags,
                           data_stats=data.stats)
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "eval.json").write_text(json.dumps(res.metrics, indent=2) + "\n")
        (d / "eval.md").write_text(markdown_table(aggregate({name: res.metrics})))
        with (d / "generations.jsonl").open("w", encoding="utf-8") as f:
            for row in res.generations:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        results[name] = res.metrics
        print(f"{name}: " + ", ".join(f"{k}={res.metrics[k]:.4g}" for k in ("win_rate", "gold", "rm", "kl")
                                      if isinstance(res.metrics.get(k), float)))
    table = markdown_table(aggregate(results))
    (out / "eval.md").write_text(table)
    (out / "summary.json").write_text(json.dumps(results, indent=2) + "\n")
    print(table)
    return 0


@dataclass
class _Rendering:
    settings: dict  # RENDERING_FIELDS -> value, as applied to the eval files
    origin: str | None  # the config.yaml the settings came from, or None (flags / defaults only)
    flags: list[str]  # the settings a command-line flag set


@dataclass
class _EvalData:
    prompts: list  # PromptExample, --data
    pairs: list | None  # PreferenceExample, --pairs
    stats: dict  # "prompts" / "pairs" -> DataStats of the load (truncations, drops)


def _rendering(src: "_Source", args: argparse.Namespace, tokenizer) -> _Rendering:
    """The rendering of one model's eval files: its run's config.yaml data section (unless
    --rendering defaults), each flag given on top."""
    base, origin = {}, None
    if args.rendering == "run" and src.run_config is not None:
        base, origin = _run_rendering(src.run_config), str(src.run_config)
    flags = {name: getattr(args, name) for name in RENDERING_FIELDS if hasattr(args, name)}
    try:
        settings = DataConfig(**{**base, **flags}).rendering()  # checks the combination, fills in defaults
    except DataError as e:
        raise DataError(f"rendering of {src.name} ({origin or 'flags'}): {e}") from None
    if origin is None and not settings["as_chat"] and "as_chat" not in flags and getattr(tokenizer, "chat_template", None):
        print(f"note: {src.name} is not in a run folder with a config.yaml, so string prompts are rendered as plain "
              "text; its tokenizer has a chat template: --as-chat renders them as chat turns", file=sys.stderr)
    return _Rendering(settings, origin, sorted(flags))


def _run_rendering(config: Path) -> dict:
    """The RENDERING_FIELDS of a run's config.yaml data section."""
    import yaml

    raw = yaml.safe_load(config.read_text()) or {}
    data = raw.get("data") if isinstance(raw, dict) else None
    if not isinstance(data, dict):
        raise DataError(f"{config}: no data section, so the training rendering is unknown; "
                        "pass --rendering defaults and the rendering flags")
    try:
        return DataConfig.from_dict(data).rendering()
    except (DataError, TypeError) as e:
        raise DataError(f"{config}: data: {e}") from None


def _load_eval_data(args: argparse.Namespace, tokenizer, rendering: dict) -> _EvalData:
    from hybridpo.data import prepare_preferences, prepare_prompts

    p = prepare_prompts(DataConfig(source=args.data, unique_prompts=True, use_cache=False, **rendering), tokenizer)
    stats = {"prompts": p.stats.to_dict()}
    pairs = None
    if args.pairs:
        q = prepare_preferences(DataConfig(source=args.pairs, use_cache=False, **rendering), tokenizer)
        pairs, stats["pairs"] = q.train + q.eval, q.stats.to_dict()
    return _EvalData(p.train + p.eval, pairs, stats)


@dataclass
class _Source:
    name: str  # the model's name in OUT/ and the table (a run folder's name)
    path: Path | str  # the model evaluated: a run's final/, a model folder or a hub name
    ref: str | None  # π_ref named by the run's config.yaml, or a peft folder's base model
    adapter: Path | None  # a LoRA adapter folder holding this model's weights (see _run_adapter), or None
    run_config: Path | None  # config.yaml of the run the model comes from (its rendering), or None


def _resolve(spec: str) -> _Source:
    """Name, model, reference, LoRA adapter (if any) and run config of a run folder or a model."""
    p = Path(spec)
    if (p / "final").is_dir():
        model_cfg = {}
        if (p / "config.yaml").exists():
            import yaml

            model_cfg = (yaml.safe_load((p / "config.yaml").read_text()) or {}).get("model", {})
        return _Source(p.name, p / "final", model_cfg.get("name_or_path"), _run_adapter(p, model_cfg.get("finetune")),
                       _run_config(p))
    if _is_adapter(p):
        return _Source(p.name, p, _adapter_base(p), p, _run_config(p))
    return _Source(p.name if p.exists() else spec.replace("/", "_"), p if p.exists() else spec, None, None,
                   _run_config(p) if p.exists() else None)


def _run_config(path: Path) -> Path | None:
    """config.yaml of the run a folder belongs to: RUN itself, RUN/final, or RUN/checkpoints/step-N/model."""
    p = Path(path).resolve()
    candidates = [p, p.parent if p.name == "final" else None,
                  p.parents[2] if len(p.parents) > 2 and p.parent.parent.name == "checkpoints" else None]
    for run in candidates:
        if run is not None and (run / "config.yaml").is_file():
            return run / "config.yaml"
    return None


def _run_adapter(run: Path, finetune: str | None) -> Path | None:
    """A LoRA run's adapter: final/ itself (lora.save_merged=false), or else the latest checkpoint's
    model/ (train() checkpoints the last step before saving final/ merged, so they hold the same
    weights); None for other runs or when the checkpoints are gone."""
    if _is_adapter(run / "final"):
        return run / "final"
    if finetune != "lora":
        return None
    from hybridpo.checkpoint import latest_checkpoint

    ckpt = latest_checkpoint(run)
    return ckpt / "model" if ckpt is not None and _is_adapter(ckpt / "model") else None


def _is_adapter(path: Path) -> bool:
    return (Path(path) / "adapter_config.json").exists()


def _adapter_base(path: Path) -> str | None:
    return json.loads((Path(path) / "adapter_config.json").read_text()).get("base_model_name_or_path")


def _same_model(a: str | None, b: str | None) -> bool:
    """The same model folder (compared resolved) or the same hub name."""
    if a is None or b is None:
        return False
    return a == b or (Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve())


def _load_with_disabled_adapter(adapter: Path):
    """The policy as a peft model (base + unmerged adapter), so its adapter can be switched off for π_ref."""
    from peft import AutoPeftModelForCausalLM

    return AutoPeftModelForCausalLM.from_pretrained(str(adapter)).eval()


def _load_lm(path: str):
    from transformers import AutoModelForCausalLM

    from hybridpo.zoo import resolve

    path = resolve(path)  # a .gguf file becomes its converted folder

    if (Path(path) / "adapter_config.json").exists():
        from peft import AutoPeftModelForCausalLM

        return AutoPeftModelForCausalLM.from_pretrained(path).merge_and_unload().eval()
    return AutoModelForCausalLM.from_pretrained(path).eval()


def _all(split) -> list:
    train, eval_ = split
    return list(train) + list(eval_)


def _scorers_and_judge(args, tokenizer):
    from hybridpo import judges
    from hybridpo.evaluate import reward_model_scorer

    scorers = {}
    if args.task == "gold":
        from hybridpo.experiments.gold.task import gold_reward

        scorers["gold"] = lambda xs, ys: [gold_reward(x, y) for x, y in zip(xs, ys)]
    if args.reward_model:
        scorers["rm"] = reward_model_scorer(args.reward_model, tokenizer.pad_token_id, args.batch_size)
    if args.judge == "none":
        return scorers, None
    if args.judge == "gold":
        if args.task != "gold":
            raise SystemExit("hybridpo eval: --judge gold needs --task gold")
        from hybridpo.experiments.gold.task import gold_reward

        return scorers, judges.gold_judge(gold_reward)
    if args.judge == "rm":
        if "rm" not in scorers:
            raise SystemExit("hybridpo eval: --judge rm needs --reward-model")
        return scorers, judges.ScorerJudge("rm")  # the rm scores of generation and reference, on token ids
    if not args.api_base_url:
        raise SystemExit("hybridpo eval: --judge api needs --api-base-url")
    key = os.environ.get(args.api_key_env, "")
    if not key:
        print(f"warning: ${args.api_key_env} is empty; calling the judge API without a key")
    cfg = judges.ApiJudgeConfig(base_url=args.api_base_url, model=args.api_model, api_key=key, seed=args.seed,
                                cache_dir=args.judge_cache or str(Path(args.out) / "judge_cache"))
    return scorers, judges.ApiJudge(cfg)
