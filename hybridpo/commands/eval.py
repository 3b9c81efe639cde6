"""`hybridpo eval MODEL_OR_RUN...`: the evaluation metrics of hybridpo.evaluate for one or more
policies, each folder's eval.json / eval.md / generations.jsonl, and one table over all of them
(mean ± std over seeds for runs named like dpo-seed0, dpo-seed1).

    hybridpo eval runs/gold/dpo-seed0 runs/gold/hypo-seed0 --ref runs/gold/sft/final \\
        --data runs/gold/data/sft_eval.jsonl --pairs runs/gold/data/pairs_eval.jsonl \\
        --task gold --judge gold --out runs/gold/eval

A run folder is read as its final/ model, and its config.yaml names the reference when --ref is
not given.

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
from dataclasses import dataclass
from pathlib import Path

JUDGES = ("gold", "rm", "api", "none")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="+", help="run folders (their final/ model) or model folders / hub names")
    p.add_argument("--ref", default=None,
                   help="π_ref (model folder or hub name), loaded as a separate model; default: the run's config.yaml "
                        "model (or a peft folder's base), and for a LoRA adapter on it the policy with its adapter "
                        "disabled (no second copy of the weights)")
    p.add_argument("--data", required=True, help="validation prompts with references: JSONL/parquet SFT rows (prompt, completion)")
    p.add_argument("--pairs", default=None, help="validation preference pairs (prompt, chosen, rejected) for logps/chosen|rejected")
    p.add_argument("--prompt-template", default="{prompt}", help="data prompt template (TL;DR: '{prompt}\\nTL;DR:')")
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
    p.add_argument("--max-prompts", type=int, default=0, help="evaluate the first N prompts (0 = all)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output folder: OUT/<model>/eval.json ..., OUT/eval.md, OUT/summary.json")


def run(args: argparse.Namespace) -> int:
    import torch

    from hybridpo.data import DataConfig, load_preferences, load_prompts, load_tokenizer
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
    data_cfg = DataConfig(source=args.data, prompt_template=args.prompt_template, unique_prompts=True, use_cache=False)
    prompts = _all(load_prompts(data_cfg, tokenizer))
    pairs = None
    if args.pairs:
        pairs = _all(load_preferences(DataConfig(source=args.pairs, prompt_template=args.prompt_template, use_cache=False), tokenizer))
    scorers, judge = _scorers_and_judge(args, tokenizer)
    out = Path(args.out)
    results = {}
    separate_ref = None  # π_ref as its own model, loaded when the first model needs it
    for src in sources:
        name, path = src.name, src.path
        if args.ref is None and src.adapter is not None and _same_model(_adapter_base(src.adapter), ref_path):
            policy, kind, path = _load_with_disabled_adapter(src.adapter), "disabled_adapter", src.adapter
            ref = Reference(kind, policy, disable_adapter_of=policy)  # π_ref = the base: one copy of the weights
        else:
            if separate_ref is None:
                separate_ref = _load_lm(ref_path)
            policy, ref, kind = _load_lm(str(path)), separate_ref, "separate"
        cfg = EvalConfig(temperature=args.temperature, max_new_tokens=args.max_new_tokens, kl_samples=args.kl_samples,
                         batch_size=args.batch_size, max_prompts=args.max_prompts, seed=args.seed, generator_name=name)
        res = evaluate(policy, ref, tokenizer, prompts, pairs=pairs, judge=judge, scorers=scorers, cfg=cfg)
        res.metrics.update(model=str(path), reference=str(ref_path), reference_kind=kind)
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
class _Source:
    name: str  # the model's name in OUT/ and the table (a run folder's name)
    path: Path | str  # the model evaluated: a run's final/, a model folder or a hub name
    ref: str | None  # π_ref named by the run's config.yaml, or a peft folder's base model
    adapter: Path | None  # a LoRA adapter folder holding this model's weights (see _run_adapter), or None


def _resolve(spec: str) -> _Source:
    """Name, model, reference and LoRA adapter (if any) of a run folder or a model."""
    p = Path(spec)
    if (p / "final").is_dir():
        model_cfg = {}
        if (p / "config.yaml").exists():
            import yaml

            model_cfg = (yaml.safe_load((p / "config.yaml").read_text()) or {}).get("model", {})
        return _Source(p.name, p / "final", model_cfg.get("name_or_path"), _run_adapter(p, model_cfg.get("finetune")))
    if _is_adapter(p):
        return _Source(p.name, p, _adapter_base(p), p)
    return _Source(p.name if p.exists() else spec.replace("/", "_"), p if p.exists() else spec, None, None)


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

    if (Path(path) / "adapter_config.json").exists():
        from peft import AutoPeftModelForCausalLM

        return AutoPeftModelForCausalLM.from_pretrained(path).merge_and_unload().eval()
    return AutoModelForCausalLM.from_pretrained(path).eval()


def _all(split) -> list:
    train, eval_ = split
    return list(train) + list(eval_)


def _scorers_and_judge(args, tokenizer):
    from hybridpo import judges

    scorers = {}
    if args.task == "gold":
        from hybridpo.tasks import gold_reward

        scorers["gold"] = lambda xs, ys: [gold_reward(x, y) for x, y in zip(xs, ys)]
    if args.reward_model:
        scorers["rm"] = _rm_scorer(args.reward_model, tokenizer, args.batch_size)
    if args.judge == "none":
        return scorers, None
    if args.judge == "gold":
        if args.task != "gold":
            raise SystemExit("hybridpo eval: --judge gold needs --task gold")
        from hybridpo.tasks import gold_reward

        return scorers, judges.gold_judge(gold_reward)
    if args.judge == "rm":
        if "rm" not in scorers:
            raise SystemExit("hybridpo eval: --judge rm needs --reward-model")
        return scorers, judges.reward_model_judge(scorers["rm"])
    if not args.api_base_url:
        raise SystemExit("hybridpo eval: --judge api needs --api-base-url")
    key = os.environ.get(args.api_key_env, "")
    if not key:
        print(f"warning: ${args.api_key_env} is empty; calling the judge API without a key")
    cfg = judges.ApiJudgeConfig(base_url=args.api_base_url, model=args.api_model, api_key=key, seed=args.seed,
                                cache_dir=args.judge_cache or str(Path(args.out) / "judge_cache"))
    return scorers, judges.ApiJudge(cfg)


def _rm_scorer(path: str, tokenizer, batch_size: int):
    import torch

    from hybridpo.config import ModelConfig
    from hybridpo.models import load_reward_model
    from hybridpo.forward import reward_scores

    model = load_reward_model(path, ModelConfig(name_or_path=path))

    @torch.no_grad()
    def score(prompts: list[str], responses: list[str]) -> list[float]:
        out = []
        for s in range(0, len(prompts), batch_size):
            p_ids = [tokenizer.encode(x) for x in prompts[s : s + batch_size]]
            r_ids = [[tokenizer.encode(y) + [tokenizer.eos_token_id]] for y in responses[s : s + batch_size]]
            out += reward_scores(model, p_ids, r_ids, pad_id=tokenizer.pad_token_id).tolist()
        return out

    return score
