"""The TL;DR experiment's stages (see the package docstring); `run` does them all."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict
from pathlib import Path

from hybridpo.experiments.common import Laps, train_stage, validation_kl
from hybridpo.experiments.tldr.config import TldrConfig
from hybridpo.experiments.tldr.gold import GOLD_SCORER, gold_reward

ONLINE = ("online_dpo", "rlhf")  # methods that learn from prompts alone
TABLE_KEYS = ("win_rate", "win_rate_stderr", "evaluator", "gold", "rm", "kl", "kl_stderr", "logratio/generations",
              "forward_kl/reference", "rewards/accuracies", "response_length", "eos_rate")
COVERAGE_KEYS = ("kl", "coverage/logratio_q50", "coverage/logratio_q90", "coverage/logratio_max",
                 "coverage/share_above_log10", "coverage/share_above_log100", "coverage/log_mean_ratio",
                 "coverage/ref_logp_per_token", "coverage/data_ref_logp_per_token", "coverage/outside_data_q05")


def run(cfg: TldrConfig, progress=lambda s: None) -> str:
    """Every stage; returns the markdown tables (also OUT/table.md, OUT/coverage.md)."""
    from hybridpo.data import load_tokenizer
    from hybridpo.experiments.tldr.data import write_split
    from hybridpo.zoo import resolve

    out, shared = Path(cfg.out), Path(cfg.shared)
    out.mkdir(parents=True, exist_ok=True)
    (out / "experiment.json").write_text(json.dumps(asdict(cfg), indent=2, default=str) + "\n")
    lap = Laps(out)
    model = resolve(cfg.model)
    tok = load_tokenizer(model)
    data = write_split(shared / "data", tok, source=cfg.source, max_prompt_length=cfg.max_prompt_length,
                       max_response_length=cfg.max_response_length, n_eval=cfg.n_eval, n_judge_posts=cfg.n_judge_posts,
                       n_judge_pairs=cfg.n_judge_pairs, n_sft=cfg.n_sft, n_train=cfg.n_train, progress=progress)
    lap("data")
    sft = _trained(train_stage(shared / "sft", sft_run(cfg, model, data), progress))
    lap("sft")
    judge = None
    if cfg.setting == "human":
        pairs = {"train": data / "pairs_train.jsonl", "eval": data / "pairs_eval.jsonl"}
        judge = _trained(train_stage(out / "judge_rm", rm_run(cfg, sft, data / "pairs_judge.jsonl", pairs["eval"],
                                                               cfg.judge_epochs), progress))
        progress(f"evaluator reward model: held-out pair accuracy {_last(out / 'judge_rm', 'eval/rewards/accuracies'):.3f}")
        lap("judge_rm")
    else:
        pairs = gold_pairs(cfg, sft, data, out / "pairs", progress)
        lap("gold_pairs")
    rm = None
    if any(spec.reward == "rm" for spec in cfg.methods.values()):
        rm = _trained(train_stage(out / "rm", rm_run(cfg, sft, pairs["train"], pairs["eval"], cfg.rm_epochs), progress))
        progress(f"reward model: held-out pair accuracy {_last(out / 'rm', 'eval/rewards/accuracies'):.3f}")
        lap("rm")
    evaluate = Evaluator(cfg, sft, rm, judge, data, pairs, out / "eval", progress)
    evaluate("sft", sft)
    runs = []
    for seed, name in run_order(cfg):  # seed 0 of every method first: a partial run has a table of every method
        run_dir = out / f"{name}-seed{seed}"
        reward = None
        if name in cfg.implicit and not (run_dir / "final" / "config.json").exists():
            reward = implicit_reward(cfg, out / f"{cfg.implicit[name]}-seed{seed % seeds_of(cfg, cfg.implicit[name])}",
                                     sft, tok)
        _trained(train_stage(run_dir, method_run(cfg, name, seed, sft, rm, data, pairs), progress, reward=reward))
        del reward
        if name in cfg.figure1:
            validation_kl(run_dir, steps_per_epoch=max(1, math.ceil(cfg.n_train / cfg.batch_size)))
        evaluate(run_dir.name, run_dir / "final")
        runs.append(run_dir)
        lap(run_dir.name)
        write_outputs(cfg, evaluate, runs, None)  # the tables so far
    bon = best_of_n(cfg, sft, judge, data, out / "eval" / "best_of_n", progress) if cfg.best_of_n > 1 else None
    lap("best_of_n")
    table, coverage = write_outputs(cfg, evaluate, runs, bon)
    lap("tables")
    return table + "\n" + coverage


def run_order(cfg: TldrConfig) -> list[tuple[int, str]]:
    """(seed, run name) in training order: every method's seed 0 (in config order), then seed 1,
    ...; the `late` methods after all of those, in the same order among themselves."""
    def order(names: list[str]) -> list[tuple[int, str]]:
        most = max((seeds_of(cfg, n) for n in names), default=0)
        return [(seed, name) for seed in range(most) for name in names if seed < seeds_of(cfg, name)]

    unknown = sorted(set(cfg.late) - set(cfg.methods))
    if unknown:
        raise ValueError(f"late={unknown}: not in methods {sorted(cfg.methods)}")
    return order([n for n in cfg.methods if n not in cfg.late]) + order([n for n in cfg.methods if n in cfg.late])


def write_outputs(cfg: TldrConfig, evaluate: "Evaluator", runs: list[Path], bon: dict | None) -> tuple[str, str]:
    """OUT/table.md, coverage.md, generations.md, claims.md and plots/validation_kl.png from the
    runs evaluated so far; returns the two tables."""
    from hybridpo.experiments.tldr.claims import write_claims
    from hybridpo.report import aggregate, markdown_table, plot_validation_kl

    out = Path(cfg.out)
    results = evaluate.results
    table = markdown_table(aggregate(results, TABLE_KEYS), TABLE_KEYS)
    coverage = markdown_table(aggregate(results, COVERAGE_KEYS), COVERAGE_KEYS)
    if bon is not None:
        table += (f"\nbest-of-{cfg.best_of_n} of π_SFT under the evaluator ({bon['judge']}), temperature 1, against "
                  f"the human reference: win rate {bon['win_rate']:.3f} (one π_SFT sample: {bon['single/win_rate']:.3f}); "
                  f"evaluator score {bon['best']:.3f} (one sample {bon['single']:.3f}, reference {bon['reference']:.3f}); "
                  f"KL ≤ {bon['kl_bound']:.3f}\n")
    (out / "table.md").write_text(table)
    (out / "coverage.md").write_text(coverage)
    (out / "generations.md").write_text(side_by_side(cfg, evaluate.generations))
    figure = [r for r in runs if r.name.rsplit("-seed", 1)[0] in cfg.figure1]
    if figure:
        plot_validation_kl(figure, out / "plots" / "validation_kl.png", key="eval/kl", x="epoch",
                           file="validation_kl.jsonl", center="median")
    write_claims(cfg, results, runs, out / "claims.md")
    return table, coverage


def seeds_of(cfg: TldrConfig, name: str) -> int:
    return cfg.seeds_by_method.get(name, cfg.seeds)


def _trained(final: Path) -> Path:
    """RUN/final; the run's checkpoints are deleted once it exists (a finished run never resumes).
    A run stopped by a signal has none: the experiment stops there (SystemExit), its checkpoint kept."""
    if not (final / "config.json").exists():
        raise SystemExit(f"{final.parent}: training stopped before its last step; run the same command to continue")
    shutil.rmtree(final.parent / "checkpoints", ignore_errors=True)
    return final


def _rendering(cfg: TldrConfig) -> dict:
    from hybridpo.experiments.tldr.data import rendering

    return rendering(cfg.max_prompt_length, cfg.max_response_length)


def _model(cfg: TldrConfig, name_or_path, **extra) -> dict:
    return {"name_or_path": str(name_or_path), "finetune": "last_n_layers", "last_n_layers": cfg.last_n_layers, **extra}


def sft_run(cfg: TldrConfig, model: str, data: Path) -> dict:
    """SFT from the pretrained model on the training posts' chosen summaries: π_SFT = π_ref."""
    return {"method": "sft", "model": _model(cfg, model),
            "data": {**_rendering(cfg), "source": str(data / "sft_train.jsonl"), "eval_source": str(data / "prompts_eval.jsonl")},
            "optim": {"lr": cfg.sft_lr, "batch_size": cfg.batch_size, "epochs": cfg.sft_epochs, "schedule": "cosine",
                      "warmup_steps": 2},
            "run": {"eval_examples": cfg.n_eval}}


def rm_run(cfg: TldrConfig, sft: Path, train: Path, held_out: Path, epochs: float) -> dict:
    """A Bradley-Terry reward model (Eq. 3) from π_SFT: its last blocks and a fresh score head train."""
    return {"method": "rm", "model": _model(cfg, sft, train_head=True),
            "data": {**_rendering(cfg), "source": str(train), "eval_source": str(held_out)},
            "optim": {"lr": cfg.rm_lr, "batch_size": cfg.batch_size, "epochs": epochs, "schedule": "cosine"},
            "run": {"eval_examples": cfg.n_eval}}


def total_steps(cfg: TldrConfig) -> int:
    """Optimizer steps of every method (the same for offline and online, lecture §22.5)."""
    return max(1, math.ceil(cfg.epochs * cfg.n_train / cfg.batch_size))


def method_run(cfg: TldrConfig, name: str, seed: int, sft: Path, rm: Path | None, data: Path, pairs: dict) -> dict:
    """The training config of one method and seed: from π_SFT (also π_ref), the last blocks
    trained, `total_steps` steps of one optimiser; figure1 runs log validation KL `evals` times."""
    spec = cfg.methods[name]
    args = asdict(spec.args)
    model = _model(cfg, sft)
    if spec.reward == "gold":
        args["scorer"] = GOLD_SCORER
    elif spec.reward == "rm":
        model["reward_model"] = str(rm)
    online = spec.method in ONLINE
    steps = total_steps(cfg)
    d = {**_rendering(cfg), "source": str(data / "prompts_train.jsonl" if online else pairs["train"])}
    run = {"seed": seed, "save_every": max(1, steps // 2), "keep_checkpoints": 1}
    if name in cfg.figure1:
        d["eval_source"] = str(data / "prompts_eval.jsonl" if online else pairs["eval"])
        run.update(eval_every=max(1, steps // max(1, cfg.evals)), eval_examples=cfg.eval_prompts,
                   eval_kl_samples=cfg.kl_samples, eval_max_new_tokens=cfg.max_new_tokens)
    if online:
        d["unique_prompts"] = True
    return {"method": spec.method, "method_args": args, "model": model, "data": d, "run": run,
            "optim": {"lr": cfg.lr, "batch_size": cfg.batch_size, "max_steps": steps, "schedule": "cosine"}}


def _last(run_dir: Path, key: str) -> float:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    values = [r[key] for r in rows if key in r]
    return values[-1] if values else float("nan")


# ------------------------------------------------------------------------------------------------
# models that share π_SFT's trunk


def _load_lm(path):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()


def sft_reference(policy, sft_model, n: int, pad_id: int):
    """π_ref = π_SFT for a policy that trained only its last n blocks from it: the policy's own
    trunk (checked equal to π_SFT's) + copies of π_SFT's last n blocks, final norm and head
    (hybridpo.models.FrozenTrunkReference), so one trunk forward serves π and π_ref."""
    import torch

    from hybridpo.models import FrozenTrunkReference, Reference, decoder_parts, freeze

    p, s = decoder_parts(policy), decoder_parts(sft_model)
    split = len(p.layers) - n
    shared = [(policy.get_input_embeddings(), sft_model.get_input_embeddings())]
    shared += list(zip(p.layers[:split], s.layers[:split]))
    for a, b in shared:
        for (name, x), y in zip(a.named_parameters(), b.parameters()):
            if not torch.equal(x, y):
                raise ValueError(f"the policy's trunk differs from π_SFT's ({name}): it did not train only its last {n} blocks")
    ref = FrozenTrunkReference(policy, n)
    ref.layers.load_state_dict(s.layers[split:].state_dict())
    ref.final_norm.load_state_dict(s.final_norm.state_dict())
    ref.head.load_state_dict(s.head.state_dict())
    freeze(ref)
    return Reference("frozen_trunk", ref, pad_id=pad_id)


def implicit_reward(cfg: TldrConfig, dpo_run: Path, sft: Path, tok):
    """The verifier of the generation-verification-gap test: β log π_dpo/π_ref of a trained DPO run."""
    from hybridpo.models import ImplicitReward, freeze

    if not (dpo_run / "final" / "config.json").exists():
        raise ValueError(f"{dpo_run}: the DPO run whose implicit reward ranks samples must be trained first "
                         "(list it before the online run in `methods`)")
    name = dpo_run.name.rsplit("-seed", 1)[0]
    policy = freeze(_load_lm(dpo_run / "final"))
    ref = sft_reference(policy, _load_lm(sft), cfg.last_n_layers, tok.pad_token_id)
    return ImplicitReward(policy, ref, beta=cfg.methods[name].args.beta, pad_id=tok.pad_token_id)


# ------------------------------------------------------------------------------------------------
# gold setting: pairs of π_SFT samples labelled by Bradley-Terry on r*


def _prompts(cfg: TldrConfig, tok, source: Path, fmt: str):
    from hybridpo.data import DataConfig, load_prompts

    train, _ = load_prompts(DataConfig(**{**_rendering(cfg), "source": str(source), "format": fmt, "unique_prompts": True}), tok)
    return train


def _posts(source: Path) -> dict[str, str]:
    """Rendered prompt text -> the raw post of each row of a prompts file."""
    from hybridpo.data.recipes import tldr_settings

    template = tldr_settings()["prompt_template"]
    rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {template.format(prompt=r["prompt"]): r["prompt"] for r in rows}


def sample_texts(model, tok, prompts, n: int, max_new_tokens: int, seed: int, batch: int = 8):
    """n temperature-1 samples per prompt: (ids [prompt][sample], texts [prompt][sample])."""
    import torch

    from hybridpo.rollout import sample

    gen = torch.Generator().manual_seed(seed)
    ids = []
    for s in range(0, len(prompts), batch):
        roll = sample(model, [p.prompt_ids for p in prompts[s : s + batch]], n, max_new_tokens=max_new_tokens,
                      eos_id=tok.eos_token_id, pad_id=tok.pad_token_id, generator=gen)
        ids += roll.responses
    return ids, [[tok.decode(y, skip_special_tokens=True) for y in ys] for ys in ids]


def gold_pairs(cfg: TldrConfig, sft: Path, data: Path, d: Path, progress) -> dict:
    """DIR/pairs_{train,eval}.jsonl: for each training / held-out post, a pair drawn from
    `candidates` samples of π_SFT and labelled by Bradley-Terry on r* (the offline data of the
    gold setting, as the paper's Eq. 3 assumes it was made)."""
    from hybridpo.data import load_tokenizer
    from hybridpo.experiments.gold.pairs import CoverageConfig, label_pairs, write_jsonl

    files = {"train": d / "pairs_train.jsonl", "eval": d / "pairs_eval.jsonl"}
    if all(f.exists() for f in files.values()):
        return files
    tok = load_tokenizer(str(sft))
    model = _load_lm(sft)
    stats = {}
    for split, source, fmt, seed in (("train", "prompts_train.jsonl", "prompt_only", 0), ("eval", "prompts_eval.jsonl", "sft", 1)):
        prompts = _prompts(cfg, tok, data / source, fmt)
        posts = _posts(data / source)
        _, texts = sample_texts(model, tok, prompts, max(2, cfg.candidates), cfg.max_new_tokens, seed)
        rows, stats[split] = label_pairs([posts[p.prompt] for p in prompts], texts, gold_reward,
                                         CoverageConfig(bt_scale=cfg.bt_scale), seed=seed)
        write_jsonl(files[split], rows)
        progress(f"gold pairs: {stats[split]['pairs']} {split} pairs from π_SFT samples "
                 f"({stats[split]['label_flips']} labels against r*, {stats[split]['skipped_prompts']} prompts skipped)")
    (d / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return files


# ------------------------------------------------------------------------------------------------
# evaluation


def _memo(scorer):
    """A TokenScorer that scores each (prompt, response) once: the references are the same for every policy."""
    from hybridpo.evaluate import TokenScorer

    cache: dict = {}

    def score_ids(prompt_ids, response_ids):
        keys = [(tuple(p), tuple(r)) for p, r in zip(prompt_ids, response_ids)]
        todo = list(dict.fromkeys(k for k in keys if k not in cache))
        if todo:
            for k, v in zip(todo, scorer.score_ids([list(k[0]) for k in todo], [list(k[1]) for k in todo])):
                cache[k] = v
        return [cache[k] for k in keys]

    return TokenScorer(score_ids)


def scorers_and_judge(cfg: TldrConfig, rm: Path | None, judge: Path | None, pad_id: int):
    """evaluate's scorers and the win-rate judge: the evaluator RM (human) or r* (gold) against the reference."""
    from hybridpo.evaluate import reward_model_scorer
    from hybridpo.judges import ScorerJudge

    scorers = {"gold": lambda xs, ys: [gold_reward(x, y) for x, y in zip(xs, ys)]}
    if rm is not None:
        scorers["rm"] = _memo(reward_model_scorer(rm, pad_id, batch_size=cfg.eval_batch_size))
    if cfg.setting == "human":
        scorers["evaluator"] = _memo(reward_model_scorer(judge, pad_id, batch_size=cfg.eval_batch_size))
        return scorers, ScorerJudge("evaluator", name="evaluator_rm")
    return scorers, ScorerJudge("gold", name="gold")


class Evaluator:
    """Evaluates π_SFT and each run on the held-out posts (Table 1 and the coverage diagnostics)
    against π_ref = π_SFT, one model at a time; `results` / `generations` by run name. A model
    with OUT/<name>/eval.json is read back; the data, π_SFT and the scorers load on first use."""

    def __init__(self, cfg: TldrConfig, sft: Path, rm, judge, data: Path, pairs: dict, out: Path, progress):
        self.cfg, self.sft, self.rm, self.judge, self.data, self.pairs = cfg, sft, rm, judge, data, pairs
        self.out, self.progress = out, progress
        self.results: dict[str, dict] = {}
        self.generations: dict[str, list[dict]] = {}
        self._loaded = None

    def _load(self):
        from hybridpo.data import DataConfig, load_preferences, load_tokenizer

        cfg = self.cfg
        tok = load_tokenizer(str(self.sft))
        prompts = _prompts(cfg, tok, self.data / "prompts_eval.jsonl", "sft")
        held_out, _ = load_preferences(DataConfig(**{**_rendering(cfg), "source": str(self.pairs["eval"])}), tok)
        scorers, judge = scorers_and_judge(cfg, self.rm, self.judge, tok.pad_token_id)
        self._loaded = (tok, prompts, held_out, _load_lm(self.sft), scorers, judge)

    def __call__(self, name: str, path: Path) -> dict:
        from hybridpo.evaluate import EvalConfig, evaluate

        d = self.out / name
        if (d / "eval.json").exists():
            self.results[name] = json.loads((d / "eval.json").read_text())
            self.generations[name] = [json.loads(line) for line in (d / "generations.jsonl").read_text().splitlines()]
            return self.results[name]
        if self._loaded is None:
            self._load()
        tok, prompts, held_out, sft_model, scorers, judge = self._loaded
        cfg = self.cfg
        policy = _load_lm(path)
        ref = sft_reference(policy, sft_model, cfg.last_n_layers, tok.pad_token_id)
        ecfg = EvalConfig(temperature=cfg.temperature, max_new_tokens=cfg.max_new_tokens, kl_samples=cfg.kl_samples,
                          batch_size=cfg.eval_batch_size, generator_name=name, layout="packed")
        res = evaluate(policy, ref, tok, prompts, pairs=held_out, judge=judge, scorers=scorers, cfg=ecfg)
        d.mkdir(parents=True, exist_ok=True)
        (d / "eval.json").write_text(json.dumps(res.metrics, indent=2) + "\n")
        (d / "generations.jsonl").write_text("".join(json.dumps(g, ensure_ascii=False) + "\n" for g in res.generations),
                                             encoding="utf-8")
        self.results[name], self.generations[name] = res.metrics, res.generations
        m = res.metrics
        self.progress(f"eval {name}: win_rate={m['win_rate']:.3f} {judge.scorer}={m[judge.scorer]:.3f} kl={m['kl']:.2f} "
                      f"max log-ratio={m.get('coverage/logratio_max', float('nan')):.1f} length={m['response_length']:.1f}")
        return m


def best_of_n(cfg: TldrConfig, sft: Path, judge, data: Path, out: Path, progress) -> dict:
    """Best-of-n of π_SFT under the evaluator (a policy that reads the evaluator itself, the reference
    point): per held-out post, n temperature-1 samples, the best by the evaluator judged against the
    human reference by the same evaluator (ties 1/2); `single/*` is the first sample alone.
    KL(π_bon‖π_SFT) ≤ log n - (n-1)/n (Beirami et al. 2024)."""
    from hybridpo.data import load_tokenizer
    from hybridpo.judges import compare_scores, win_rate

    if (out / "eval.json").exists():
        return json.loads((out / "eval.json").read_text())
    tok = load_tokenizer(str(sft))
    prompts = _prompts(cfg, tok, data / "prompts_eval.jsonl", "sft")
    n = cfg.best_of_n
    ids, texts = sample_texts(_load_lm(sft), tok, prompts, n, cfg.max_new_tokens, seed=2)
    scorers, judge_ = scorers_and_judge(cfg, None, judge, tok.pad_token_id)
    score = scorers[judge_.scorer]
    if cfg.setting == "human":
        flat = score.score_ids([p.prompt_ids for p in prompts for _ in range(n)], [y for ys in ids for y in ys])
        ref_scores = score.score_ids([p.prompt_ids for p in prompts], [p.reference_ids for p in prompts])
    else:
        flat = score([p.prompt for p in prompts for _ in range(n)], [y for ys in texts for y in ys])
        ref_scores = score([p.prompt for p in prompts], [p.reference for p in prompts])
    per = [flat[i * n:(i + 1) * n] for i in range(len(prompts))]
    best, single = [max(s) for s in per], [s[0] for s in per]
    metrics = {**win_rate(compare_scores(best, ref_scores)), "judge": judge_.name, "n": n,
               "single/win_rate": win_rate(compare_scores(single, ref_scores))["win_rate"],
               "best": sum(best) / len(best), "single": sum(single) / len(single),
               "reference": sum(ref_scores) / len(ref_scores), "kl_bound": math.log(n) - (n - 1) / n}
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(metrics, indent=2) + "\n")
    progress(f"best-of-{n} of π_SFT: win rate {metrics['win_rate']:.3f} (one sample {metrics['single/win_rate']:.3f})")
    return metrics


def side_by_side(cfg: TldrConfig, generations: dict[str, list[dict]]) -> str:
    """Markdown: for the first held-out posts, the human reference, π_SFT's and each method's (seed
    0) near-greedy summary, with the evaluator's score."""
    key = "evaluator" if cfg.setting == "human" else "gold"
    names = [k for k in generations if k == "sft" or k.endswith("seed0")]
    lines = ["# Generations side by side", "",
             f"Setting `{cfg.setting}`: near-greedy summaries (temperature {cfg.temperature}, at most "
             f"{cfg.max_new_tokens} tokens) of held-out TL;DR posts; the number is the evaluator's score "
             f"(`{key}`: {'the evaluator reward model' if key == 'evaluator' else 'r*'}).", ""]
    for i, row in enumerate(generations["sft"][: cfg.side_by_side]):
        post = row["instruction"].strip()
        lines += [f"## Post {i + 1}", "", "```text", post, "```", "",
                  f"**human reference** ({key} {row['scores'].get(key + '/reference', float('nan')):.2f}): "
                  f"{row.get('reference', '').strip()}", ""]
        for name in names:
            g = generations[name][i]
            cut = "" if g["finished"] else " (cut at the length limit)"
            lines += [f"**{name}** ({key} {g['scores'].get(key, float('nan')):.2f}{cut}): {g['output'].strip()}", ""]
    return "\n".join(lines) + "\n"
