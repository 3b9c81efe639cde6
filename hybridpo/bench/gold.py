"""The full gold-reward benchmark of the paper's setting: RM-scored online methods, YAML configs.

`hybridpo bench gold --config configs/gold/demo.yaml [--seeds 3] [--out DIR] [--methods a,b]`

The stages are hybridpo.tasks.pipeline's (task data, SFT on the references, pairs sampled from
π_SFT and labelled by Bradley-Terry on r*, per-epoch validation KL, gold evaluation against
π_ref = π_SFT, table and plots). This module adds what the paper's Table 1 pipeline has on top:

  * a reward model r̂ trained (Eq. 3) from π_SFT on the same offline pairs as DPO, and the online
    methods scored by it, as in the paper: `online_dpo` and `rlhf` sample from π and rank /
    reward with r̂, never with r*;
  * the same methods scored by r* itself, `online_dpo_gold` and `rlhf_gold`: "a policy trained
    on the gold reward", the benchmark's sanity check (it must beat π_SFT);
  * the configuration as a YAML file (configs/gold/*.yaml) so a setting is one named file,
    and the wall time of every stage in OUT/timing.json.

Method names map to a training method and its reward source (METHODS). Every stage is skipped
when its output exists (pipeline.train's rule), so a run that is interrupted continues.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

from hybridpo.tasks import pipeline
from hybridpo.tasks.pipeline import GOLD_SCORER, GoldBenchConfig

# benchmark method name -> (hybridpo training method, reward of its samples: None = offline pairs only)
METHODS = {
    "dpo": ("dpo", None),
    "ipo": ("ipo", None),
    "hypo": ("hypo", None),  # the KL surrogate needs samples of π but no reward
    "online_dpo": ("online_dpo", "rm"),
    "rlhf": ("rlhf", "rm"),
    "online_dpo_gold": ("online_dpo", "gold"),
    "rlhf_gold": ("rlhf", "gold"),
}


@dataclass
class GoldConfig(GoldBenchConfig):
    methods: list[str] = field(default_factory=lambda: ["dpo", "hypo"])  # names of METHODS, trained from π_SFT
    rm_epochs: int = 2  # passes of the reward model over the offline pairs (only when a method needs r̂)
    rm_lr: float = 1e-3  # reward-model learning rate
    k: int = 4  # samples per prompt of the online methods (online DPO's best-vs-worst, RLHF's RLOO group)
    hypo_k: int = 2  # samples per prompt of HyPO's KL surrogate
    best_of_n: int = 0  # > 1: also evaluate best-of-n of π_SFT under r* (uses the gold reward: must beat π_SFT); 0 = skip
    sampled: int = 0  # > 0: also judge this many temperature-1 samples per held-out prompt of every run against
    #                   as many of π_SFT (the law RLHF optimises; the table's near-greedy columns judge the mode)


def load_gold_config(path: str | Path | None, overrides: dict | None = None) -> GoldConfig:
    """A GoldConfig from a YAML file of its fields (unknown keys are an error), then overrides."""
    raw: dict = {}
    if path is not None:
        raw = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: a gold benchmark config is a mapping of GoldConfig fields")
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    known = {f.name for f in fields(GoldConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"{path or 'overrides'}: unknown fields {unknown}; GoldConfig has {sorted(known)}")
    if isinstance(raw.get("methods"), str):
        raw["methods"] = [m.strip() for m in raw["methods"].split(",") if m.strip()]
    bad = sorted(set(raw.get("methods", [])) - set(METHODS))
    if bad:
        raise ValueError(f"{path or 'overrides'}: methods {bad}; choose from {sorted(METHODS)}")
    return GoldConfig(**raw)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="YAML of GoldConfig fields (configs/gold/*.yaml)")
    for f in fields(GoldConfig):  # every field can be overridden on the command line; None = the config's value
        kind = {"int": int, "float": float, "str": str, "bool": _flag}.get(str(f.type).split(" ")[0], str)
        p.add_argument("--" + f.name.replace("_", "-"), type=kind, default=None,
                       help="comma-separated: " + ", ".join(METHODS) if f.name == "methods" else None)


def _flag(text: str) -> bool:
    """A boolean field on the command line: true/false, yes/no, 1/0."""
    if text.lower() in ("true", "yes", "1"):
        return True
    if text.lower() in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r}: want true or false")


def run(args: argparse.Namespace) -> int:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one line per stage instead of a bar per checkpoint load / save
    overrides = {f.name: getattr(args, f.name, None) for f in fields(GoldConfig)}
    cfg = load_gold_config(args.config, overrides)
    start = time.perf_counter()
    table = run_gold(cfg, progress=lambda s: print(f"[{time.perf_counter() - start:6.0f}s] {s}", flush=True))
    print(table)
    print(f"plots: {Path(cfg.out) / 'plots'}   total {time.perf_counter() - start:.0f}s")
    return 0


def run_gold(cfg: GoldConfig, progress=lambda s: None) -> str:
    """Every stage; returns the markdown table (also OUT/table.md). Plots in OUT/plots/."""
    from hybridpo.zoo import init_model
    from hybridpo.report import TABLE_KEYS, aggregate, markdown_table, plot_training, plot_validation_kl

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    timing: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timing[name] = round(now - clock, 1)
        clock = now
        (out / "timing.json").write_text(json.dumps(timing, indent=2) + "\n")

    data = pipeline.write_task(cfg, out / "data")
    if not (out / "init" / "config.json").exists():
        init_model("gpt-neox", cfg.size, cfg.tokenizer, out / "init", seed=0)
    sft = pipeline.train(out / "sft", {
        "method": "sft", "model": {"name_or_path": str(out / "init")},
        "data": {"source": str(data / "sft_train.jsonl"), "eval_source": str(data / "sft_eval.jsonl")},
        "optim": {"lr": cfg.sft_lr, "batch_size": cfg.batch_size, "max_steps": cfg.sft_steps, "warmup_steps": 10}}, progress)
    lap("sft")
    pipeline.sample_pairs(cfg, sft, data, progress)
    lap("pairs")
    steps_per_epoch = max(1, cfg.n_train // cfg.batch_size)
    rm = None
    if any(METHODS[m][1] == "rm" for m in cfg.methods):
        rm = pipeline.train(out / "rm", {
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
            pipeline.train(run_dir, method_run(cfg, name, seed, sft, rm, data, steps_per_epoch), progress)
            pipeline.validation_kl(cfg, run_dir, sft, data, steps_per_epoch)
            runs.append(run_dir)
            lap(run_dir.name)
    results = pipeline.evaluate_all(cfg, sft, runs, data, out / "eval", progress)
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


def method_run(cfg: GoldConfig, name: str, seed: int, sft: Path, rm: Path | None, data: Path, steps_per_epoch: int) -> dict:
    """The training config (as a dict for hybridpo.config.config_from_dict) of one method and seed."""
    method, reward = METHODS[name]
    margs: dict = {"beta": cfg.beta}
    if method in ("online_dpo", "rlhf"):
        margs |= {"k": cfg.k, "max_new_tokens": cfg.max_new_tokens}
    if method == "hypo":
        margs |= {"lam": cfg.lam, "k": cfg.hypo_k, "max_new_tokens": cfg.max_new_tokens}
    model = {"name_or_path": str(sft)}
    if reward == "gold":
        margs["scorer"] = GOLD_SCORER
    elif reward == "rm":
        model["reward_model"] = str(rm)
    online = reward is not None
    return {
        "method": method, "model": model, "method_args": margs,
        "data": {"source": str(data / "prompts_train.jsonl")} if online else
                {"source": str(data / "pairs_sft_train.jsonl"), "eval_source": str(data / "pairs_sft_eval.jsonl")},
        "optim": {"lr": cfg.lr, "batch_size": cfg.batch_size, "max_steps": steps_per_epoch * cfg.epochs},
        "run": {"seed": seed, "save_every": steps_per_epoch, "keep_checkpoints": cfg.epochs + 1},
    }


def rm_accuracy(rm_run: Path) -> float:
    """The reward model's last held-out pair accuracy (`eval/rewards/accuracies` in RUN/metrics.jsonl)."""
    rows = [json.loads(line) for line in (rm_run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    accs = [r["eval/rewards/accuracies"] for r in rows if "eval/rewards/accuracies" in r]
    return accs[-1] if accs else float("nan")


SAMPLED_KEYS = ("sampled/win_rate", "sampled/gold", "sampled/gold_sft")


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
    from hybridpo.judges import gold_judge, win_rate
    from hybridpo.tasks import gold_reward

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
    import math

    from hybridpo.judges import gold_judge, win_rate
    from hybridpo.tasks import gold_reward

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
