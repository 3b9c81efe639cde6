"""What the data layer hands to the rest of hybridpo: examples, counts, and its one error type.

Token ids are plain `list[int]`; tensors are built later by `logprobs` / `rollout`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Hashable


class DataError(ValueError):
    """Bad input data or data settings. The message names the file, the row and the field."""


@dataclass(frozen=True)
class PreferenceExample:
    prompt_ids: list[int]  # the rendered prompt; left-truncated if over `max_prompt_length`
    chosen_ids: list[int]  # preferred response; ends with EOS unless cut by truncation
    rejected_ids: list[int]  # dispreferred response; ends with EOS unless cut by truncation
    prompt: str  # rendered prompt text (template / chat template applied, before truncation)
    chosen: str  # chosen response text (without EOS)
    rejected: str  # rejected response text (without EOS)
    group: Hashable | None  # split key (the TL;DR post, by default the prompt), or None


@dataclass(frozen=True)
class PromptExample:
    prompt_ids: list[int]  # the rendered prompt; left-truncated if over `max_prompt_length`
    prompt: str  # rendered prompt text
    reference_ids: list[int] | None  # SFT target ending with EOS (unless cut); None for prompt-only rows
    reference: str | None  # SFT target text (without EOS); None for prompt-only rows
    group: Hashable | None  # split key, or None


@dataclass
class DataStats:
    """Everything that happened to the rows of one load: nothing disappears silently.

    Counts cover the training and evaluation sources together; `train_examples` and
    `eval_examples` are what came out.
    """

    rows_read: int = 0  # rows read from every source
    dropped_ties: int = 0  # preference rows with chosen == rejected (after templates)
    dropped_empty: int = 0  # rows with an empty (whitespace-only) prompt or response
    dropped_duplicates: int = 0  # exact repeats of an earlier example (prompt loads only)
    dropped_overlong: int = 0  # rows over a length limit when `on_overlong: drop`
    beyond_max_rows: int = 0  # valid examples left out by `max_rows` / `max_eval_rows`
    truncated_prompts: int = 0  # prompts left-truncated (their start was cut, the end kept)
    truncated_responses: int = 0  # responses right-truncated; each of these lost its EOS
    train_examples: int = 0  # examples in the training split
    eval_examples: int = 0  # examples in the evaluation split
    train_groups: int = 0  # distinct split groups (e.g. TL;DR posts) in the training split
    eval_groups: int = 0  # distinct split groups in the evaluation split
    from_cache: bool = False  # True when the tokenised examples came from the on-disk cache

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DataStats":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def summary(self) -> str:
        dropped = self.dropped_ties + self.dropped_empty + self.dropped_duplicates + self.dropped_overlong
        return (
            f"{self.rows_read} rows read; kept {self.train_examples} train / {self.eval_examples} eval "
            f"({self.train_groups} / {self.eval_groups} groups); dropped {dropped} "
            f"(ties {self.dropped_ties}, empty {self.dropped_empty}, duplicates {self.dropped_duplicates}, "
            f"over-long {self.dropped_overlong}); {self.beyond_max_rows} beyond max_rows; truncated {self.truncated_prompts} prompts (start cut), "
            f"{self.truncated_responses} responses (end cut, no EOS)"
            + ("; from cache" if self.from_cache else "")
        )


TOKEN_FIELDS = ("prompt_ids", "chosen_ids", "rejected_ids", "reference_ids")  # the id lists split_stats measures


def split_stats(examples: list) -> dict:
    """Size and token lengths of one split: {"examples", "groups", "<field>_tokens": {min, mean, max}}.

    One length entry per id field the examples have (`prompt`, `chosen`, `rejected` for pairs;
    `prompt`, `reference` for prompts; prompt-only rows have no reference). Lengths are after
    EOS, BOS and truncation: what the model sees.
    """
    out: dict = {"examples": len(examples), "groups": len({e.group for e in examples})}
    for name in TOKEN_FIELDS:
        lengths = [len(ids) for e in examples if (ids := getattr(e, name, None)) is not None]
        if lengths:
            out[f"{name.removesuffix('_ids')}_tokens"] = {
                "min": min(lengths), "mean": sum(lengths) / len(lengths), "max": max(lengths),
            }
    return out
