"""`hybridpo eval MODEL_OR_RUN...`: the evaluation metrics of hybridpo.evaluate for one or more
policies, each folder's eval.json / eval.md / generations.jsonl, and one table over all of them
(mean ± std over seeds for runs named like dpo-seed0, dpo-seed1).

    hybridpo eval runs/gold/dpo-seed0 runs/gold/hypo-seed0 --ref runs/gold/sft/final \\
        --data runs/gold/data/sft_eval.jsonl --pairs runs/gold/data/pairs_eval.jsonl \\
        --task gold --judge gold --out runs/gold/eval

A run folder is read as its final/ model, and its config.yaml names the reference when --ref is
not given. The API judge reads its key from the environment variable named by --api-key-env
(default OPENAI_API_KEY); the key is passed to the judge and never printed or written.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from pathlib import Path

JUDGES = ("gold", "rm", "api", "none")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("models", nargs="+", help="run folders (their final/ model) or model folders / hub names")
    p.add_argument("--ref", default=None, help="π_ref (model folder or hub name); default: the run's config.yaml model")
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
    from hybridpo.report import aggregate, markdown_table

    torch.manual_seed(args.seed)
    sources = [_resolve(m) for m in args.models]
    ref_path = args.ref or sources[0][2]
    if not ref_path:
        raise SystemExit("hybridpo eval: no --ref given and the first model has no run config.yaml naming one")
    tokenizer = load_tokenizer(args.tokenizer or str(sources[0][1]))
    data_cfg = DataConfig(source=args.data, prompt_template=args.prompt_template, unique_prompts=True, use_cache=False)
    prompts = _all(load_prompts(data_cfg, tokenizer))
    pairs = None
    if args.pairs:
        pairs = _all(load_preferences(DataConfig(source=args.pairs, prompt_template=args.prompt_template, use_cache=False), tokenizer))
    ref = _load_lm(ref_path)
    scorers, judge = _scorers_and_judge(args, tokenizer)
    out = Path(args.out)
    results = {}
    for name, path, _ in sources:
        policy = _load_lm(str(path))
        cfg = EvalConfig(temperature=args.temperature, max_new_tokens=args.max_new_tokens, kl_samples=args.kl_samples,
                         batch_size=args.batch_size, max_prompts=args.max_prompts, seed=args.seed, generator_name=name)
        res = evaluate(policy, ref, tokenizer, prompts, pairs=pairs, judge=judge, scorers=scorers, cfg=cfg)
        res.metrics.update(model=str(path), reference=str(ref_path))
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


def _resolve(spec: str) -> tuple[str, Path | str, str | None]:
    """(name, model path, reference named by the run's config) for a run folder or a model."""
    p = Path(spec)
    if (p / "final").is_dir():
        ref = None
        if (p / "config.yaml").exists():
            import yaml

            ref = (yaml.safe_load((p / "config.yaml").read_text()) or {}).get("model", {}).get("name_or_path")
        return p.name, p / "final", ref
    return (p.name if p.exists() else spec.replace("/", "_")), (p if p.exists() else spec), None


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
    from hybridpo.rewards import reward_scores

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
