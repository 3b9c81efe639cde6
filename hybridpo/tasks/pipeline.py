"""The stages of the gold-reward benchmark; `hybridpo bench gold` (hybridpo/bench/gold.py) runs them.

    write_task: prompts, references and SFT rows -> train: one `hybridpo train` run (skipped when
    its final model exists, so an interrupted benchmark continues) -> sample_pairs: samples of π_SFT
    labelled by Bradley-Terry on r* -> validation_kl: KL(π_t‖π_SFT) per epoch checkpoint ->
    evaluate_all: gold reward, win rate vs π_SFT's generations and KL(π‖π_SFT) for every run.

Validation KL over training (Figure 1): each method run keeps a checkpoint per epoch; afterwards
KL(π_t‖π_SFT) is estimated on the held-out prompts for each checkpoint (hybridpo.evaluate.reverse_kl)
and written to RUN/validation_kl.jsonl, which `plot` draws with a min/max band over seeds.

Deviation, stated: generations here stop at `max_new_tokens` = 8, not the paper's 53 (a task
response is at most 4 words + EOS; the cap only bounds wasted CPU time on unfinished samples).
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hybridpo.data.recipes import shared_dir

SHARED_TOKENIZER = shared_dir() / "tokenizers" / "pythia" / "tokenizer.json"
GOLD_SCORER = "hybridpo.tasks.gold:gold_reward"
@dataclass
class GoldBenchConfig:
    out: str = "runs/gold"  # benchmark folder: data/, sft/, <method>-seed<s>/, eval/, table.md, plots/
    methods: list[str] = field(default_factory=lambda: ["dpo", "hypo"])  # methods trained from the SFT policy
    seeds: int = 3  # runs per method (seeds 0..seeds-1); the SFT policy and data are shared
    size: str = "small"  # init-model size of the policy (hybridpo.models.SIZES)
    tokenizer: str = str(SHARED_TOKENIZER)  # the real Pythia tokenizer
    n_train: int = 512  # prompts of the offline pairs (and of the online methods' samples)
    n_sft: int = 0  # SFT prompts: the n_train pair prompts plus fresh ones up to n_sft (0 = n_train; prompts are free)
    n_eval: int = 64  # held-out prompts (evaluation, validation KL)
    n_words: int = 46  # task vocabulary: items drawn from the first n_words of gold.WORDS (fewer = easier; 46 = all)
    capitalise_key: bool = False  # marked items written Capitalised in the prompt (GoldTaskConfig.capitalise_key)
    sft_steps: int = 150  # SFT optimizer steps on the references
    sft_lr: float = 3e-3  # SFT learning rate
    candidates: int = 4  # samples of π_SFT per training prompt from which pairs are built
    max_distinct: int | None = None  # coverage: distinct SFT samples per prompt that pairs use (None = all)
    max_words: int | None = None  # coverage: only samples of at most this many words enter pairs
    bt_scale: float = 5.0  # Bradley-Terry inverse temperature of the labels on r*
    epochs: int = 3  # passes over the pairs per method (Figure 1: DPO drifts with epochs)
    batch_size: int = 32  # examples per optimizer step (methods and SFT)
    lr: float = 1e-4  # learning rate of every preference method
    beta: float = 0.1  # β of DPO / IPO / HyPO / online DPO / RLHF
    lam: float = 0.5  # HyPO λ
    max_new_tokens: int = 8  # evaluation and sampling length cap (see the module docstring)
    kl_samples: int = 4  # samples per held-out prompt for the KL estimates


def write_task(cfg: GoldBenchConfig, d: Path) -> Path:
    from hybridpo.tasks import GoldTaskConfig, make_split, sft_rows, write_jsonl

    if not (d / "sft_eval.jsonl").exists():
        n_sft = max(cfg.n_sft, cfg.n_train)
        sft, held_out = make_split(n_sft, cfg.n_eval, seed=0, cfg=GoldTaskConfig(n_words=cfg.n_words, capitalise_key=cfg.capitalise_key))
        train = sft[: cfg.n_train]  # the pair prompts are the first n_train SFT prompts
        write_jsonl(d / "sft_train.jsonl", sft_rows(sft))
        write_jsonl(d / "prompts_train.jsonl", ({"prompt": e.prompt} for e in train))
        write_jsonl(d / "sft_eval.jsonl", sft_rows(held_out))
    return d


def train(run_dir: Path, raw: dict, progress) -> Path:
    """Train unless RUN/final exists; returns RUN/final."""
    from hybridpo.config import config_from_dict
    from hybridpo.loop import train

    final = run_dir / "final"
    if (final / "config.json").exists():
        return final
    raw = dict(raw)
    raw["run"] = {"out_dir": str(run_dir), "progress": False, **raw.get("run", {})}
    progress(f"train {raw['method']} -> {run_dir}")
    train(config_from_dict(raw, where=str(run_dir)), resume=(run_dir / "checkpoints").exists())
    return final


def sample_pairs(cfg: GoldBenchConfig, sft: Path, d: Path, progress) -> None:
    """Pairs from π_SFT's samples (temperature 1), BT-labelled on r*, restricted by the coverage knobs."""
    import torch

    from hybridpo.data import load_tokenizer
    from hybridpo.rollout import sample
    from hybridpo.tasks import CoverageConfig, gold_reward, label_pairs, write_jsonl
    from transformers import AutoModelForCausalLM

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


def validation_kl(cfg: GoldBenchConfig, run_dir: Path, sft: Path, d: Path, steps_per_epoch: int) -> None:
    """KL(π_t‖π_SFT) on held-out prompts for each epoch's checkpoint -> RUN/validation_kl.jsonl."""
    from hybridpo.data import load_tokenizer
    from hybridpo.evaluate import EvalConfig, reverse_kl
    from transformers import AutoModelForCausalLM

    path = run_dir / "validation_kl.jsonl"
    if path.exists():
        return
    tok = load_tokenizer(str(sft))
    ref = AutoModelForCausalLM.from_pretrained(sft).eval()
    prompts = [tok.encode(json.loads(line)["prompt"]) for line in (d / "sft_eval.jsonl").read_text().splitlines()]
    ecfg = EvalConfig(max_new_tokens=cfg.max_new_tokens, kl_samples=cfg.kl_samples, batch_size=64)
    rows = [{"step": 0, "epoch": 0.0, "eval/kl": 0.0}]  # π_0 = π_SFT
    for ckpt in sorted((run_dir / "checkpoints").glob("step-*")):
        step = int(ckpt.name.split("-")[1])
        policy = AutoModelForCausalLM.from_pretrained(ckpt / "model").eval()
        kl = reverse_kl(policy, ref, prompts, pad_id=tok.pad_token_id, eos_id=tok.eos_token_id, cfg=ecfg)
        rows.append({"step": step, "epoch": step / steps_per_epoch, "eval/kl": kl["kl"], "eval/kl_stderr": kl["kl_stderr"]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def evaluate_all(cfg: GoldBenchConfig, sft: Path, runs: list[Path], d: Path, out: Path, progress) -> dict:
    """Gold reward, win rate vs π_SFT's generations, KL(π‖π_SFT) for SFT and every run."""
    from hybridpo.data import DataConfig, PromptExample, load_preferences, load_prompts, load_tokenizer
    from hybridpo.evaluate import EvalConfig, evaluate
    from hybridpo.judges import gold_judge
    from hybridpo.tasks import gold_reward
    from transformers import AutoModelForCausalLM

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
