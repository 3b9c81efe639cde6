"""The gold-reward experiment: the paper's Table 1 / Figure 1 pipeline on a task whose true reward
r* is a program (`task`), so every number is exact.

    hybridpo experiment gold --config configs/gold/demo.yaml [key=value ...]

Stages (`run`): task data -> SFT on the references -> pairs sampled from π_SFT and labelled by
Bradley-Terry on r* (`pairs`) -> a reward model r̂ from π_SFT on the same pairs (when a method
uses it) -> every method × seed from π_SFT, validation KL each epoch -> evaluation against
π_ref = π_SFT: gold reward, win rate against π_SFT's own generations, KL -> table and plots.
Methods with `reward: rm` (online DPO, RLHF) rank / reward their samples with r̂, never with r*;
`reward: gold` ones use r* itself ("a policy trained on the gold reward", the sanity check).
Every stage is skipped when its output exists, so an interrupted experiment continues.
"""

from hybridpo.experiments.gold.config import GOLD_SCORER, GoldConfig

Config = GoldConfig  # what `hybridpo experiment gold` reads

__all__ = ["GOLD_SCORER", "Config", "GoldConfig"]
