"""The chat experiment's stages (see the package docstring); `run` does them all."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path

from hybridpo.experiments.chat.config import ChatConfig
from hybridpo.experiments.common import Laps, train_stage, validation_kl

TABLE_KEYS = ("kl", "kl_stderr", "rewards/accuracies", "rm", "rm/reference", "logps/chosen", "logps/rejected",
              "response_length", "eos_rate")


def run(cfg: ChatConfig, progress=lambda s: None) -> str:
    """Every stage; returns the markdown table (also OUT/table.md)."""
    from hybridpo.data import load_tokenizer
    from hybridpo.report import aggregate, markdown_table, plot_validation_kl
    from hybridpo.zoo import resolve

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "experiment.json").write_text(json.dumps(asdict(cfg), indent=2, default=str) + "\n")
    lap = Laps(out)
    model = resolve(cfg.model)  # a .gguf / zoo name becomes a plain folder, converted once
    tok = load_tokenizer(model)
    lap("model")
    data = select_pairs(cfg, tok, out / "data", progress)
    lap("data")
    steps = max(1, math.ceil(cfg.epochs * cfg.n_train / cfg.batch_size))
    rm = train_stage(out / "rm", {
        "method": "rm", "model": _model(cfg, model), "data": _data(cfg, data),
        "optim": {"lr": cfg.rm_lr, "batch_size": cfg.batch_size, "epochs": cfg.rm_epochs, "schedule": "linear"},
        "run": {"eval_examples": cfg.n_eval}}, progress)
    progress(f"reward model: held-out pair accuracy {_last(out / 'rm', 'eval/rewards/accuracies'):.3f}")
    lap("rm")
    runs = []
    for name in cfg.methods:
        for seed in range(cfg.seeds):
            run_dir = out / f"{name}-seed{seed}"
            train_stage(run_dir, method_run(cfg, name, seed, model, data, steps), progress)
            validation_kl(run_dir, steps_per_epoch=max(1, math.ceil(cfg.n_train / cfg.batch_size)))
            runs.append(run_dir)
            lap(run_dir.name)
    results, generations = evaluate_all(cfg, model, rm, runs, data, out / "eval", progress)
    lap("eval")
    table = markdown_table(aggregate(results, TABLE_KEYS), TABLE_KEYS)
    (out / "table.md").write_text(table)
    (out / "generations.md").write_text(side_by_side(generations, cfg.side_by_side))
    if runs:
        plot_validation_kl(runs, out / "plots" / "validation_kl.png", key="eval/kl", x="epoch", file="validation_kl.jsonl")
    lap("table_plots")
    return table


def _model(cfg: ChatConfig, model: str) -> dict:
    return {"name_or_path": model, "finetune": "last_n_layers", "last_n_layers": cfg.last_n_layers}


def _data(cfg: ChatConfig, data: dict) -> dict:
    return {**cfg.data, "source": str(data["train"]), "eval_source": str(data["eval"])}


def select_pairs(cfg: ChatConfig, tok, d: Path, progress) -> dict:
    """The first n_train / n_eval pairs the data section keeps (after its drops: over-long rows,
    ties, empty responses), written as raw rows in file order: DIR/pairs_{train,eval}.jsonl, and the
    held-out prompts with the chosen response as their reference: DIR/prompts_eval.jsonl."""
    from hybridpo.data import DataConfig, prepare_preferences

    files = {"train": d / "pairs_train.jsonl", "eval": d / "pairs_eval.jsonl", "prompts": d / "prompts_eval.jsonl"}
    if all(f.exists() for f in files.values()):
        return files
    data_cfg = DataConfig.from_dict({**cfg.data, "use_cache": False})
    prepared = prepare_preferences(data_cfg, tok)
    kept = {"train": prepared.train[: cfg.n_train], "eval": prepared.eval[: cfg.n_eval]}
    sources = {"train": data_cfg.source, "eval": data_cfg.eval_source}
    d.mkdir(parents=True, exist_ok=True)
    for split, examples in kept.items():
        rows = _raw_rows(sources[split], {ex.group for ex in examples}, data_cfg.prompt_field)
        if len(rows) < len(examples):
            raise ValueError(f"{sources[split]}: found {len(rows)} raw rows for the {len(examples)} kept {split} pairs")
        _write_jsonl(files[split], rows)
        if split == "eval":
            _write_jsonl(files["prompts"], [{"prompt": r[data_cfg.prompt_field], "completion": r[data_cfg.chosen_field]}
                                            for r in rows])
        progress(f"data: {len(rows)} {split} pairs of at most {data_cfg.max_length} tokens ({sources[split]})")
    return files


def _raw_rows(path: str, prompts: set, field: str) -> list[dict]:
    """The first row of each kept prompt, in file order (a pair's group is its raw prompt)."""
    rows, seen = [], set()
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            if row.get(field) in prompts and row[field] not in seen:
                seen.add(row[field])
                rows.append(row)
    return rows


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def method_run(cfg: ChatConfig, name: str, seed: int, model: str, data: dict, steps: int) -> dict:
    """The training config of one method and seed: π_ref = the model, the last N blocks trained,
    `evals` held-out evaluations with validation KL, the last at the end."""
    spec = cfg.methods[name]
    return {
        "method": spec.method, "method_args": asdict(spec.args), "model": _model(cfg, model), "data": _data(cfg, data),
        "optim": {"lr": cfg.lr, "batch_size": cfg.batch_size, "epochs": cfg.epochs, "schedule": "linear"},
        "run": {"seed": seed, "eval_every": max(1, steps // max(1, cfg.evals)), "eval_examples": cfg.eval_prompts,
                "eval_kl_samples": cfg.kl_samples, "eval_max_new_tokens": cfg.max_new_tokens},
    }


def _last(run_dir: Path, key: str) -> float:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    values = [r[key] for r in rows if key in r]
    return values[-1] if values else float("nan")


def evaluate_all(cfg: ChatConfig, model: str, rm: Path, runs: list[Path], data: dict, out: Path, progress):
    """π_ref and every run on the held-out prompts and pairs, rendered as the runs trained:
    (metrics per run name, generations per run name)."""
    import torch
    from transformers import AutoModelForCausalLM

    from hybridpo.data import DataConfig, load_preferences, load_prompts, load_tokenizer
    from hybridpo.evaluate import EvalConfig, evaluate, reward_model_scorer

    tok = load_tokenizer(model)
    render = {**cfg.data, "use_cache": False}
    prompts, _ = load_prompts(DataConfig.from_dict({**render, "source": str(data["prompts"]), "eval_source": None,
                                                    "format": "sft", "on_overlong": "truncate"}), tok)
    pairs, _ = load_preferences(DataConfig.from_dict({**render, "source": str(data["eval"]), "eval_source": None}), tok)
    ref = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    scorers = {"rm": reward_model_scorer(rm, tok.pad_token_id, batch_size=cfg.batch_size)}
    results, generations = {}, {}
    for name, path in [("reference", None)] + [(r.name, r / "final") for r in runs]:
        policy = ref if path is None else AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        ecfg = EvalConfig(temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, kl_samples=cfg.kl_samples,
                          batch_size=cfg.batch_size, generator_name=name, layout="packed")
        res = evaluate(policy, ref, tok, prompts, pairs=pairs, scorers=scorers, cfg=ecfg)
        (out / name).mkdir(parents=True, exist_ok=True)
        (out / name / "eval.json").write_text(json.dumps(res.metrics, indent=2) + "\n")
        with (out / name / "generations.jsonl").open("w", encoding="utf-8") as f:
            for row in res.generations:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        results[name], generations[name] = res.metrics, res.generations
        progress(f"eval {name}: kl={res.metrics.get('kl', 0):.3f} rm={res.metrics['rm']:.3f} "
                 f"accuracy={res.metrics['rewards/accuracies']:.3f} length={res.metrics['response_length']:.1f}")
    return results, generations


def side_by_side(generations: dict[str, list[dict]], n: int) -> str:
    """Markdown: for each of the first n held-out prompts, the reference policy's and each run's
    generation (seed 0 of each method), with the reward model's score."""
    names = [k for k in generations if k == "reference" or k.endswith("seed0")]
    lines = ["# Generations side by side", "",
             "Near-greedy generations on held-out UltraFeedback prompts; `rm` is the reward model's score.", ""]
    for i, row in enumerate(generations["reference"][:n]):
        lines += [f"## Prompt {i + 1}", "", "```text", row["instruction"].strip(), "```", ""]
        for name in names:
            g = generations[name][i]
            lines += [f"**{name}** (rm {g['scores'].get('rm', float('nan')):.2f}, {'finished' if g['finished'] else 'cut at the length limit'}):",
                      "", "> " + g["output"].strip().replace("\n", "\n> "), ""]
    return "\n".join(lines) + "\n"
