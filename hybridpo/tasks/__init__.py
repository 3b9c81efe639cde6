"""Synthetic tasks with a known (gold) reward, so every evaluation number is exact.

    from hybridpo.tasks import gold, make_examples, gold_reward, label_pairs, CoverageConfig
    train = make_examples(512, seed=0)
    rows, stats = label_pairs([e.prompt for e in train], responses, gold_reward, CoverageConfig(), seed=0)

`gold` (the task: prompts, references, r*), `pairs` (Bradley-Terry labelled pairs, coverage, JSONL).
"""

from hybridpo.tasks import gold
from hybridpo.tasks.gold import GoldExample, GoldTaskConfig, gold_reward, make_examples, make_split, noisy_responses
from hybridpo.tasks.pairs import CoverageConfig, bt_probability, covered, label_pairs, sft_rows, write_jsonl

__all__ = [
    "gold", "GoldExample", "GoldTaskConfig", "gold_reward", "make_examples", "make_split", "noisy_responses",
    "CoverageConfig", "bt_probability", "covered", "label_pairs", "sft_rows", "write_jsonl",
]
