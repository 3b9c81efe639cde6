"""The TL;DR experiment's settings (configs/experiments/tldr_*.yaml): one documented field each."""

from __future__ import annotations

from dataclasses import dataclass, field

from hybridpo.data.recipes import tldr_settings
from hybridpo.experiments.common import MethodSpec

SETTINGS = ("human", "gold")


@dataclass
class TldrConfig:
    out: str = "runs/tldr/human"  # this setting's folder: rm/, judge_rm/ or pairs/, <name>-seed<s>/, eval/, tables, plots/
    shared: str = "runs/tldr/shared"  # what both settings share: data/ (the split) and sft/ (π_SFT = π_ref)
    setting: str = "human"  # "human": the human TL;DR pairs; "gold": pairs of π_SFT samples labelled by Bradley-Terry on r*
    model: str = "smollm2-135m-instruct"  # the pretrained model SFT starts from: a folder, hub name, .gguf or hybridpo.zoo name
    methods: dict[str, MethodSpec] = field(default_factory=dict)  # run name -> {method, reward (none | rm | gold), args}
    implicit: dict[str, str] = field(default_factory=dict)  # run name -> the DPO run whose implicit reward β log π_dpo/π_ref ranks its samples (same seed; the generation-verification-gap test)
    seeds: int = 3  # runs per method (seeds 0..seeds-1)
    seeds_by_method: dict[str, int] = field(default_factory=dict)  # run name -> its number of seeds, where not `seeds`
    late: list[str] = field(default_factory=list)  # run names trained after every seed of the others (sweeps, oracles): a partial run has the main methods' seeds first
    source: str = tldr_settings()["source"]  # the shared TL;DR comparisons (10k pairs over 1,653 posts)
    max_prompt_length: int = 256  # posts whose templated prompt is longer are left out (not truncated)
    max_response_length: int = 64  # comparisons with a longer summary (EOS included) are left out
    n_eval: int = 32  # held-out posts: evaluation prompts, their references and one pair each
    n_judge_posts: int = 96  # posts whose pairs train only the evaluator reward model (human setting)
    n_judge_pairs: int = 320  # evaluator training pairs (from the judge posts)
    n_sft: int = 256  # SFT rows: chosen summaries of the training posts
    n_train: int = 64  # preference pairs (one per training post) every method trains on; their posts are the online prompts
    last_n_layers: int = 4  # the blocks that train in every stage (paper §5.1.2's chat setting; the trunk is shared)
    batch_size: int = 8  # pairs / prompts per optimizer step
    sft_lr: float = 1e-4  # SFT learning rate
    sft_epochs: float = 1.0  # SFT passes over its rows
    rm_lr: float = 3e-4  # reward-model learning rate (policy-side and evaluator)
    rm_epochs: float = 2.0  # reward-model passes over the training pairs
    judge_epochs: float = 1.0  # evaluator passes over its pairs
    lr: float = 2e-4  # learning rate of every preference method (one optimiser: AdamW, cosine decay)
    epochs: float = 2.0  # passes over the n_train pairs (offline) / prompts (online); the same steps for every method
    figure1: list[str] = field(default_factory=lambda: ["dpo", "hypo"])  # runs whose validation KL is logged during training (Figure 1)
    evals: int = 4  # validation-KL evaluations of a figure1 run, evenly spaced (the last at the end)
    eval_prompts: int = 12  # held-out prompts of those evaluations
    max_new_tokens: int = 48  # generation cap (evaluation, validation KL, best-of-n; paper TL;DR: 53)
    kl_samples: int = 2  # samples per held-out prompt for the KL and coverage estimates
    temperature: float = 0.01  # temperature of the scored generations (paper TL;DR: near-greedy 0.01)
    candidates: int = 2  # gold setting: π_SFT samples per prompt from which a pair is drawn
    bt_scale: float = 10.0  # gold setting: P(y1 ≻ y2) = σ(bt_scale (r*(y1) - r*(y2)))
    best_of_n: int = 4  # > 1: best-of-n of π_SFT under the evaluator, against the references; 0 = skip
    eval_batch_size: int = 16  # prompts per forward in the evaluation
    side_by_side: int = 4  # held-out posts shown in OUT/generations.md

    def __post_init__(self) -> None:
        if self.setting not in SETTINGS:
            raise ValueError(f"setting={self.setting!r}; choose from {list(SETTINGS)}")
        if self.last_n_layers < 1:
            raise ValueError(f"last_n_layers={self.last_n_layers}; must be >= 1 (the trunk is shared by every stage)")
