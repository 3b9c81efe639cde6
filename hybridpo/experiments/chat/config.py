"""The chat experiment's settings (configs/experiments/*.yaml): one documented field each."""

from __future__ import annotations

from dataclasses import dataclass, field

from hybridpo.experiments.common import MethodSpec


@dataclass
class ChatConfig:
    out: str = "runs/chat"  # experiment folder: rm/, <name>-seed<s>/, eval/, table.md, generations.md, plots/, timing.json
    model: str = "smollm2-135m-instruct"  # π_ref and the start of every run: a folder, a hub name, a .gguf file or a hybridpo.zoo name
    methods: dict[str, MethodSpec] = field(default_factory=dict)  # run name -> {method, args} (DPO, HyPO, ...)
    seeds: int = 1  # runs per method (seeds 0..seeds-1); the reward model is shared
    data: dict = field(default_factory=dict)  # the data section of every run (hybridpo.data.DataConfig fields, `recipe:` included)
    n_train: int = 128  # training pairs (the first, in file order, of those the data section keeps)
    n_eval: int = 32  # held-out pairs / prompts for evaluation (from the data section's eval source)
    last_n_layers: int = 4  # the blocks that train in every run (paper §5.1.2: the last 4)
    batch_size: int = 8  # pairs per optimizer step (paper Tables 8-9: 8)
    epochs: float = 1.0  # passes over the training pairs per method
    lr: float = 3e-6  # learning rate of the methods (paper Tables 8-9: 3e-6, linear decay)
    rm_epochs: float = 1.0  # passes of the reward model over the training pairs
    rm_lr: float = 1e-5  # reward-model learning rate
    evals: int = 4  # held-out evaluations (validation KL) per method run, evenly spaced (the last at the end)
    eval_prompts: int = 16  # held-out prompts of the validation KL during training (cheaper than the final evaluation)
    max_new_tokens: int = 64  # generation length cap (evaluation, validation KL)
    kl_samples: int = 2  # samples per held-out prompt for the KL estimates
    temperature: float = 0.01  # temperature of the generations that are scored (near-greedy; the KL samples are at 1.0)
    side_by_side: int = 6  # prompts shown in OUT/generations.md
