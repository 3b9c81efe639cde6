"""The gold-reward experiment's settings (configs/gold/*.yaml): one documented field each."""

from __future__ import annotations

from dataclasses import dataclass, field

from hybridpo.data.recipes import shared_dir
from hybridpo.experiments.common import MethodSpec

SHARED_TOKENIZER = shared_dir() / "tokenizers" / "pythia" / "tokenizer.json"
GOLD_SCORER = "hybridpo.experiments.gold.task:gold_reward"  # r* as a method_args.scorer


@dataclass
class GoldConfig:
    out: str = "runs/gold"  # experiment folder: data/, sft/, rm/, <name>-seed<s>/, eval/, table.md, plots/, timing.json
    methods: dict[str, MethodSpec] = field(default_factory=dict)  # run name -> {method, reward (none | rm | gold), args}
    seeds: int = 3  # runs per method (seeds 0..seeds-1); the SFT policy, reward model and data are shared
    arch: str = "gpt-neox"  # family of the random policy (hybridpo.zoo.ARCHS)
    size: str = "small"  # its size (hybridpo.zoo: tiny, small, ...)
    tokenizer: str = str(SHARED_TOKENIZER)  # the real Pythia tokenizer
    n_train: int = 512  # prompts of the offline pairs (and of the online methods' samples)
    n_sft: int = 0  # SFT prompts: the n_train pair prompts plus fresh ones up to n_sft (0 = n_train; prompts are free)
    n_eval: int = 64  # held-out prompts (evaluation, validation KL)
    n_words: int = 46  # task vocabulary: items drawn from the first n_words of task.WORDS (fewer = easier; 46 = all)
    capitalise_key: bool = False  # marked items written Capitalised in the prompt (GoldTaskConfig.capitalise_key)
    sft_steps: int = 150  # SFT optimizer steps on the references
    sft_lr: float = 3e-3  # SFT learning rate
    candidates: int = 4  # samples of π_SFT per training prompt from which pairs are built
    max_distinct: int | None = None  # coverage: distinct SFT samples per prompt that pairs use (None = all)
    max_words: int | None = None  # coverage: only samples of at most this many words enter pairs
    bt_scale: float = 5.0  # Bradley-Terry inverse temperature of the labels on r*
    rm_epochs: int = 2  # passes of the reward model over the offline pairs (only when a method has reward: rm)
    rm_lr: float = 1e-3  # reward-model learning rate
    epochs: int = 3  # passes over the pairs per method (Figure 1: DPO drifts with epochs); one checkpoint and validation KL per epoch
    batch_size: int = 32  # examples per optimizer step (methods and SFT)
    lr: float = 1e-4  # learning rate of every preference method
    max_new_tokens: int = 8  # evaluation length cap (a task response is at most 4 words + EOS: the cap only bounds wasted CPU time)
    kl_samples: int = 4  # samples per held-out prompt for the KL estimates (per epoch and final)
    best_of_n: int = 0  # > 1: also evaluate best-of-n of π_SFT under r* (uses the gold reward: must beat π_SFT); 0 = skip
    sampled: int = 0  # > 0: also judge this many temperature-1 samples per held-out prompt of every run against as many of π_SFT
