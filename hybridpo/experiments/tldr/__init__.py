"""The TL;DR experiment: the paper's Table 1 / Figure 1 and the lecture's online-vs-offline test
on a real pretrained model (SmolLM2-135M-Instruct), in the paper's summarisation setting in
miniature, in two settings that share the data split and π_SFT:

    hybridpo experiment tldr --config configs/experiments/tldr_human.yaml   # the human TL;DR pairs
    hybridpo experiment tldr --config configs/experiments/tldr_gold.yaml    # pairs labelled by r*

Stages (`run`): the split by post (`data`: short posts only, held-out / evaluator / training
posts) -> SFT from the pretrained model on the training posts' chosen summaries (π_SFT, also π_ref;
only the last N blocks train, in this and every later stage, so every model shares one frozen
trunk) -> the offline pairs: the human ones ("human") or pairs of π_SFT samples labelled by
Bradley-Terry on the reward program r* (`gold`; "gold") -> a Bradley-Terry reward model from
π_SFT on those pairs (what `reward: rm` methods rank / reward with) and, in the human setting, an
evaluator reward model trained on pairs of other posts, held out from every run -> every method ×
seed from π_SFT with the same steps and optimiser (`implicit:` runs rank their samples with a DPO
run's implicit reward: the generation-verification-gap test) -> evaluation on the held-out posts
against π_ref = π_SFT: win rate against the human reference (the evaluator RM, or r*), the
scores, KL, the coverage diagnostics -> best-of-n of π_SFT under the evaluator -> OUT/table.md,
OUT/coverage.md, OUT/generations.md, OUT/claims.md, OUT/plots/validation_kl.png (Figure 1).
Every stage is skipped when its output exists, so an interrupted experiment continues.
"""

from hybridpo.experiments.tldr.config import TldrConfig

Config = TldrConfig  # what `hybridpo experiment tldr` reads

__all__ = ["Config", "TldrConfig"]
