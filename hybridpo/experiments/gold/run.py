"""The gold-reward experiment's stages (see the package docstring); `run` does them all."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

from hybridpo.experiments.common import Laps, train_stage, validation_kl
from hybridpo.experiments.gold.config import GOLD_SCORER, GoldConfig

SAMPLED_KEYS = ("sampled/win_rate", "sampled/gold", "sampled/gold_sft")


def run(cfg: GoldConfig, progress=lambda s: None) -> str:
    """Every stage; returns the markdown table (also OUT/table.md). Plots in OUT/plots/."""
    from hybridpo.report import TABLE_KEYS, aggregate, markdown_table, plot_training, plot_validation_kl
    from hybridpo.zoo import init_model

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "experiment.json").write_text(json.dumps(asdict(cfg), indent=2, default=str) + "\n")
    lap = Laps(out)

    data = write_task(cfg, out / "data")
    if not (out / "init" / "config.json").exists():
        init_model(cfg.arch, cfg.size, cfg.tokenizer, out / "init", seed=0)
    sft = train_stage(out / "sft", {
        "method": "sft", "model": {"name_or_path": str(out / "init")},
        "data": {"source": str(data / "sft_train.jsonl"), "eval_source": str(data / "sft_eval.jsonl")},
        "optim": {"lr": cfg.sft_lr, "batch_size": cfg.batch_size, "max_steps": cfg.sft_steps, "warmup_steps": 10}}, progress)
    lap("sft")
    sample_pairs(cfg, sft, data, progress)
    lap("pairs")
    steps_per_epoch = max(1, cfg.n_train // cfg.batch_size)
    rm = None
    if any(spec.reward == "rm" for spec in cfg.methods.values()):
        rm = train_stage(out / "rm", {
            "method": "rm", "model": {"name_or_path": str(sft)},
            "data": {"source": str(data / "pairs_sft_train.jsonl"), "eval_source": str(data / "pairs_sft_eval.jsonl")},
            "optim": {"lr": cfg.rm_lr, "batch_size": cfg.batch_size, "max_steps": steps_per_epoch * cfg.rm_epochs},
            "run": {"eval_every": steps_per_epoch}}, progress)
        progress(f"reward model: held-out accuracy {rm_accuracy(out / 'rm'):.3f}")
        lap("rm")
    runs = []
    for name in cfg.methods:
        for seed in range(cfg.seeds):
            run_dir = out / f"{name}-seed{seed}"
            train_stage(run_dir, method_run(cfg, name, seed, sft, rm, data, steps_per_epoch), progress)
            validation_kl(run_dir, steps_per_epoch)
            runs.append(run_dir)
            lap(run_dir.name)
    results = evaluate_all(cfg, sft, runs, data, out / "eval", progress)
    lap("eval")
    keys = TABLE_KEYS
    if cfg.sampled > 0:
        for run_dir in runs:
            results[run_dir.name] |= sampled_vs_sft(cfg, sft, run_dir / "final", data, out / "eval" / run_dir.name, cfg.sampled)
        keys = TABLE_KEYS + SAMPLED_KEYS
        lap("sampled")
    table = markdown_table(aggregate(results, keys), keys)
    if cfg.best_of_n > 1:
        bon = best_of_n(cfg, sft, data, out / "eval" / "best_of_n", cfg.best_of_n)
        table += (f"\nbest-of-{cfg.best_of_n} of π_SFT under r* vs one π_SFT sample (temperature 1): "
                  f"win rate {bon['win_rate']:.3f}, r* {bon['gold']:.3f} vs {bon['gold/opponent']:.3f}, "
                  f"KL ≤ {bon['kl_bound']:.3f}\n")
        lap("best_of_n")
    (out / "table.md").write_text(table)
    if runs:
        plot_training(runs, out / "plots" / "training_curves.png")
        plot_validation_kl(runs, out / "plots" / "validation_kl.png", key="eval/kl", x="epoch", file="validation_kl.jsonl")
    lap("table_plots")
    return table


def write_task(cfg: GoldConfig, d: Path) -> Path:
    from hybridpo.experiments.gold.pairs import sft_rows, write_jsonl
    from hybridpo.experiments.gold.task import GoldTaskConfig, make_split

    if not (d / "sft_eval.jsonl").exists():
        n_sft = max(cfg.n_sft, cfg.n_train)
        sft, held_out = make_split(n_sft, cfg.n_eval, seed=0, cfg=GoldTaskConfig(n_words=cfg.n_words, capitalise_key=cfg.capitalise_key))
        train = sft[: cfg.n_train]  # the pair prompts are the first n_train SFT prompts
        write_jsonl(d / "sft_train.jsonl", sft_rows(sft))
        write_jsonl(d / "prompts_train.jsonl", ({"prompt": e.prompt} for e in train))
        write_jsonl(d / "sft_eval.jsonl", sft_rows(held_out))
    return d


def sample_pairs(cfg: GoldConfig, sft: Path, d: Path, progress) -> None:
    """Pairs from π_SFT's samples (temperature 1), BT-labelled on r*, restricted by the coverage knobs."""
    import torch
    from transformers import AutoModelForCausalLM

    from hybridpo.data import load_tokenizer
    from hybridpo.experiments.gold.pairs import CoverageConfig, label_pairs, write_jsonl
    from hybridpo.experiments.gold.task import gold_reward
    from hybridpo.rollout import sample

    if (d / "pairs_sft_eval.jsonl").exists():
        return
    tok = load_tokenizer(str(sft))
    model = AutoModelForCausalLM.from_pretrained(sft).eval()
    gen = torch.Generator().manual_seed(0)
    cov = CoverageConfig(max_distinct=cfg.max_distinct, max_words=cfg.max_words, bt_scale=cfg.bt_scale)
    stats = {}
    for split, source in (("train", "prompts_train.jsonl"), ("eval", "sft_eval.jsonl")):
        prompts = [json.loads(line)["prompt"] for line in (d / source).read_text().splitlines()]
        texts = []
        for s in range(0, len(prompts), 64):
            roll = sample(model, [tok.encode(x) for x in prompts[s : s + 64]], cfg.candidates,
                          max_new_tokens=cfg.max_new_tokens, eos_id=tok.eos_token_id, pad_id=tok.pad_token_id,
                          generator=gen)
            texts += [[tok.decode(y, skip_special_tokens=True) for y in ys] for ys in roll.responses]
        rows, stats[split] = label_pairs(prompts, texts, gold_reward, cov, seed=1)
        write_jsonl(d / f"pairs_sft_{split}.jsonl", rows)
    (d / "pairs_sft.json").write_text(json.dumps(stats, indent=2) + "\n")
    progress(f"pairs from π_SFT samples: {json.dumps(stats)}")


def method_run(cfg: GoldConfig, name: str, seed: int, sft: Path, rm: Path | None, data: Path, steps_per_epoch: int) -> dict:
    """The training config (a dict for hybridpo.config.config_from_dict) of one method and seed:
    π_SFT as the start and π_ref, a checkpoint and a held-out evaluation (with validation KL) per epoch."""
    spec = cfg.methods[name]
    args = asdict(spec.args)
    model: dict = {"name_or_path": str(sft)}
    if spec.reward == "gold":
        args["scorer"] = GOLD_SCORER
    elif spec.reward == "rm":
        model["reward_model"] = str(rm)
    prompts_only = spec.method in ("online_dpo", "rlhf")  # they learn from prompts alone
    return {
        "method": spec.method, "model": model, "method_args": args,
        "data": {"source": str(data / ("prompts_train.jsonl" if prompts_only else "pairs_sft_train.jsonl")),
                 "eval_source": str(data / ("sft_eval.jsonl" if prompts_only else "pairs_sft_eval.jsonl"))},
        "optim": {"lr": cfg.lr, "batch_size": cfg.batch_size, "max_steps": steps_per_epoch * cfg.epochs},
        "run": {"seed": seed, "save_every": steps_per_epoch, "keep_checkpoints": cfg.epochs + 1,
                "eval_every": steps_per_epoch, "eval_examples": cfg.n_eval, "eval_kl_samples": cfg.kl_samples,
                "eval_max_new_tokens": cfg.max_new_tokens},
    }


def rm_accuracy(rm_run: Path) -> float:
    """The reward model's last held-out pair accuracy (`eval/rewards/accuracies` in RUN/metrics.jsonl)."""
    rows = [json.loads(line) for line in (rm_run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    accs = [r["eval/rewards/accuracies"] for r in rows if "eval/rewards/accuracies" in r]
    return accs[-1] if accs else float("nan")


def evaluate_all(cfg: GoldConfig, sft: Path, runs: list[Path], d: Path, out: Path, progress) -> dict:
    """Gold reward, win rate vs π_SFT's generations, KL(π‖π_SFT) for SFT and every run."""
    from transformers import AutoModelForCausalLM

    from hybridpo.data import DataConfig, PromptExample, load_preferences, load_prompts, load_tokenizer
    from hybridpo.evaluate import EvalConfig, evaluate
    from hybridpo.experiments.gold.task import gold_reward
    from hybridpo.judges import gold_judge

    tok = load_tokenizer(str(sft))
    ref = AutoModelForCausalLM.from_pretrained(sft).eval()
    prompts, _ = load_prompts(DataConfig(source=str(d / "sft_eval.jsonl"), use_cache=False), tok)
    pairs, _ = load_preferences(DataConfig(source=str(d / "pairs_sft_eval.jsonl"), use_cache=False), tok)
    scorers = {"gold": lambda xs, ys: [gold_reward(x, y) for x, y in zip(xs, ys)]}
    ecfg = EvalConfig(max_new_tokens=cfg.max_new_tokens, kl_samples=cfg.kl_samples, batch_size=64)
    base = evaluate(ref, ref, tok, prompts, pairs=pairs, judge=gold_judge(gold_reward), scorers=scorers,
                    cfg=EvalConfig(**{**asdict(ecfg), "generator_name": "sft"}))
    # the opponent of every win rate: π_SFT's own near-greedy generations
    vs_sft = [PromptExample(p.prompt_ids, p.prompt, tok.encode(g["output"]) + [tok.eos_token_id], g["output"], p.group)
              for p, g in zip(prompts, base.generations)]
    results = {}
    for name, policy_dir in [("sft", sft)] + [(r.name, r / "final") for r in runs]:
        policy = AutoModelForCausalLM.from_pretrained(policy_dir).eval()
        res = evaluate(policy, ref, tok, vs_sft, pairs=pairs, judge=gold_judge(gold_reward), scorers=scorers,
                       cfg=EvalConfig(**{**asdict(ecfg), "generator_name": name}))
        res.metrics["gold/reference_task"] = base.metrics["gold/reference"]  # r* of the task's own references
        (out / name).mkdir(parents=True, exist_ok=True)
        (out / name / "eval.json").write_text(json.dumps(res.metrics, indent=2) + "\n")
        with (out / name / "generations.jsonl").open("w") as f:
            for row in res.generations:
                f.write(json.dumps(row) + "\n")
        results[name] = res.metrics
        progress(f"eval {name}: gold={res.metrics['gold']:.3f} win_rate={res.metrics['win_rate']:.3f} kl={res.metrics['kl']:.3f}")
    return results


def _samples(model_dir: Path, prompts: list[str], n: int, cfg: GoldConfig, seed: int) -> list[list[str]]:
    """n temperature-1 responses (text) per prompt of the model in model_dir; (P, n)."""
    import torch
    from transformers import AutoModelForCausalLM

    from hybridpo.data import load_tokenizer
    from hybridpo.rollout import sample

    tok = load_tokenizer(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    roll = sample(model, [tok.encode(x) for x in prompts], n, max_new_tokens=cfg.max_new_tokens,
                  eos_id=tok.eos_token_id, pad_id=tok.pad_token_id, generator=torch.Generator().manual_seed(seed))
    return [[tok.decode(y, skip_special_tokens=True) for y in ys] for ys in roll.responses]


def _held_out_prompts(data: Path) -> list[str]:
    return [json.loads(line)["prompt"] for line in (data / "sft_eval.jsonl").read_text().splitlines() if line.strip()]


def sampled_vs_sft(cfg: GoldConfig, sft: Path, policy: Path, data: Path, out: Path, n: int) -> dict:
    """n temperature-1 samples of `policy` per held-out prompt, each judged by r* against an
    independent sample of π_SFT (the i-th against the i-th): the comparison of the two LAWS that
    RLHF's objective E_{y~π}[r*] is about, where the near-greedy table columns compare their modes.

    OUT/sampled.json also keeps, per prompt, the mean r* difference and the win rate over its n
    pairs (`sampled/*_by_prompt`, for tests over prompts, the independent units); the returned
    metrics (for the table) leave those lists out.
    """
    from hybridpo.experiments.gold.task import gold_reward
    from hybridpo.judges import gold_judge, win_rate

    prompts = _held_out_prompts(data)
    mine, theirs = _samples(policy, prompts, n, cfg, seed=1), _samples(sft, prompts, n, cfg, seed=2)
    xs = [x for x in prompts for _ in range(n)]
    a, b = [y for ys in mine for y in ys], [y for ys in theirs for y in ys]
    ra, rb = [gold_reward(x, y) for x, y in zip(xs, a)], [gold_reward(x, y) for x, y in zip(xs, b)]
    verdicts = gold_judge(gold_reward).judge(xs, a, b)
    wr = win_rate(verdicts)
    metrics = {
        "sampled/win_rate": wr["win_rate"], "sampled/wins": wr["wins"], "sampled/losses": wr["losses"],
        "sampled/ties": wr["ties"], "sampled/gold": sum(ra) / len(ra), "sampled/gold_sft": sum(rb) / len(rb),
        "sampled/gold_diff_by_prompt": [sum(ra[i * n:(i + 1) * n]) / n - sum(rb[i * n:(i + 1) * n]) / n
                                        for i in range(len(prompts))],
        "sampled/win_rate_by_prompt": [sum(v.score for v in verdicts[i * n:(i + 1) * n]) / n for i in range(len(prompts))],
        "sampled/n": n,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "sampled.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return {k: v for k, v in metrics.items() if not isinstance(v, list)}


def best_of_n(cfg: GoldConfig, sft: Path, data: Path, out: Path, n: int, seed: int = 0) -> dict:
    """Best-of-n of π_SFT under r*: a policy that uses the gold reward, so it must beat π_SFT.

    Per held-out prompt, n + 1 samples of π_SFT at temperature 1: the best of the first n by r* is
    the policy's response; the last one, independent of them, is the opponent (a sample of π_SFT).
    Judged by the gold judge (ties 1/2). KL(π_bon‖π_SFT) is not estimated; its bound
    log n - (n-1)/n (Beirami et al. 2024, "Theoretical guarantees on the best-of-n alignment policy")
    is reported as kl_bound. Writes OUT/eval.json; returns the metrics.
    """
    from hybridpo.experiments.gold.task import gold_reward
    from hybridpo.judges import gold_judge, win_rate

    prompts = _held_out_prompts(data)
    texts = _samples(sft, prompts, n + 1, cfg, seed)  # (P, n + 1)
    best = [max(ys[:n], key=lambda y, x=x: gold_reward(x, y)) for x, ys in zip(prompts, texts)]
    opponent = [ys[n] for ys in texts]
    metrics = {
        **win_rate(gold_judge(gold_reward).judge(prompts, best, opponent)),
        "gold": sum(gold_reward(x, y) for x, y in zip(prompts, best)) / len(prompts),
        "gold/opponent": sum(gold_reward(x, y) for x, y in zip(prompts, opponent)) / len(prompts),
        "kl_bound": math.log(n) - (n - 1) / n,
        "n": n,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
