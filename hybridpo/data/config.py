"""`DataConfig`: every choice the data layer makes, one documented field each."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from hybridpo.data.examples import DataError
from hybridpo.data.recipes import recipe_settings

# The settings that decide which token ids a row's text becomes: prompt template, response prefix and
# spacing, chat rendering, truncation, BOS. `hybridpo eval` applies a run's own values of these to
# its evaluation files, so a policy is evaluated on inputs rendered as it was trained on them.
RENDERING_FIELDS = ("prompt_template", "response_prefix", "normalize_response_space", "as_chat", "chat_template",
                    "implicit_prompt_marker", "max_prompt_length", "max_response_length", "max_length", "add_bos")
FORMAT_NAMES = ("auto", "standard", "conversational", "implicit_prompt", "prompt_only", "sft")
ON_BAD = ("drop", "error")


@dataclass
class DataConfig:
    # --- where the rows come from --------------------------------------------------------------
    source: str = ""  # a .jsonl/.json/.parquet/.csv file, a `datasets` folder, or a Hugging Face dataset name
    split: str = "train"  # split of a `datasets` source to train on (ignored for single files)
    subset: str | None = None  # `datasets` config name (e.g. "default"); None for single files
    eval_source: str | None = None  # separate evaluation rows (same kinds as `source`); None: see eval_split / eval_fraction
    eval_split: str | None = None  # split of `source` (a `datasets` source) used for evaluation, e.g. "validation"
    eval_fraction: float = 0.0  # with no eval_source/eval_split: share of groups held out from `source` for evaluation
    split_by: str = "prompt"  # held-out unit: "prompt" (the raw prompt; the TL;DR post), "row", or a row field name
    split_seed: int = 0  # seed of the hash that assigns groups to train / eval
    max_rows: int | None = None  # keep at most this many training examples (the first, in file order); None: all
    max_eval_rows: int | None = None  # keep at most this many evaluation examples; None: all
    hf_cache_dir: str | None = None  # `datasets` cache folder for hub / folder sources; None: its default

    # --- how a row is read ---------------------------------------------------------------------
    format: str = "auto"  # one of FORMAT_NAMES; "auto" detects it from the first row's fields
    prompt_field: str = "prompt"  # column with the prompt (string or list of messages)
    chosen_field: str = "chosen"  # column with the preferred response / whole preferred dialogue
    rejected_field: str = "rejected"  # column with the dispreferred response / dialogue
    response_field: str | None = None  # SFT target column; None tries "completion" then "response"
    implicit_prompt_marker: str = "\n\nAssistant:"  # implicit-prompt strings: the prompt ends after the last one shared by both
    prompt_template: str = "{prompt}"  # applied to string prompts; TL;DR uses "{prompt}\nTL;DR:"
    response_prefix: str = ""  # removed from the start of each string response when present ("TL;DR:" in the shared TL;DR file)
    normalize_response_space: bool = False  # strip each response and start it with exactly one space (" summary")
    as_chat: bool = False  # render string rows as one user turn + one assistant turn with the chat template
    chat_template: str = "tokenizer"  # "tokenizer" (its own; error if it has none), "builtin" (HH-style Human/Assistant), or a Jinja string

    # --- what is dropped, what is truncated -----------------------------------------------------
    on_tie: str = "drop"  # chosen == rejected: "drop" (counted) or "error"
    on_empty: str = "drop"  # empty prompt or response: "drop" (counted) or "error"
    max_prompt_length: int | None = None  # prompt tokens kept; longer prompts lose their START (left-truncation)
    max_response_length: int | None = None  # response tokens kept incl. EOS; longer responses lose their END and their EOS
    max_length: int | None = None  # prompt + response tokens; cuts responses further (needs max_prompt_length < max_length)
    on_overlong: str = "truncate"  # rows over a limit: "truncate" (counted) or "drop" (counted)
    add_bos: bool = False  # prepend the tokenizer's BOS to prompts that do not start with it (Llama-style models)
    unique_prompts: bool = False  # prompt loads: keep only the first example of each prompt (online sampling / eval)

    # --- cache --------------------------------------------------------------------------------
    use_cache: bool = True  # reuse tokenised examples from an earlier identical load
    cache_dir: str | None = None  # where tokenised data is kept; None: ~/.cache/hybridpo/data

    def __post_init__(self) -> None:
        if self.format not in FORMAT_NAMES:
            raise DataError(f"data.format={self.format!r}; choose from {list(FORMAT_NAMES)}")
        for name in ("on_tie", "on_empty"):
            if getattr(self, name) not in ON_BAD:
                raise DataError(f"data.{name}={getattr(self, name)!r}; choose from {list(ON_BAD)}")
        if self.on_overlong not in ("truncate", "drop"):
            raise DataError(f"data.on_overlong={self.on_overlong!r}; choose from ['truncate', 'drop']")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise DataError(f"data.eval_fraction={self.eval_fraction}; must be in [0, 1)")
        if self.eval_fraction > 0 and (self.eval_source or self.eval_split):
            raise DataError("data.eval_fraction holds evaluation rows out of data.source; it cannot be combined "
                            "with data.eval_source / data.eval_split (choose one way to get evaluation data)")
        for name in ("max_prompt_length", "max_response_length", "max_length", "max_rows", "max_eval_rows"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise DataError(f"data.{name}={value}; must be >= 1 or null")
        if self.max_length is not None and (
            self.max_prompt_length is None or self.max_prompt_length >= self.max_length
        ):
            raise DataError(
                f"data.max_length={self.max_length} needs max_prompt_length < max_length "
                f"(got {self.max_prompt_length}) so every response keeps at least one token"
            )
        if "{prompt}" not in self.prompt_template:
            raise DataError(f"data.prompt_template={self.prompt_template!r} must contain '{{prompt}}'")

    def rendering(self) -> dict:
        """The RENDERING_FIELDS of this config, by name (what eval.json records as `rendering`)."""
        return {name: getattr(self, name) for name in RENDERING_FIELDS}

    @classmethod
    def from_dict(cls, d: dict) -> "DataConfig":
        """Build from a YAML mapping; `recipe: tldr` starts from that recipe, other keys override it."""
        d = dict(d)
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names - {"recipe"})
        if unknown:
            raise DataError(f"unknown data settings {unknown}; valid: {sorted(names | {'recipe'})}")
        recipe = d.pop("recipe", None)
        return cls(**({**recipe_settings(recipe), **d} if recipe is not None else d))


def recipe_config(name: str, shared: str | Path | None = None, **overrides) -> DataConfig:
    """The DataConfig of recipe `name` (hybridpo.data.recipes) with `overrides` on top."""
    return DataConfig(**{**recipe_settings(name, shared), **overrides})


def tldr(shared: str | Path | None = None, **overrides) -> DataConfig:
    """TL;DR comparisons (hybridpo.data.recipes): "{prompt}\\nTL;DR:" + " summary", split by post."""
    return recipe_config("tldr", shared, **overrides)


def ultrafeedback(shared: str | Path | None = None, **overrides) -> DataConfig:
    """UltraFeedback pairs as one chat exchange with the tokenizer's template (hybridpo.data.recipes)."""
    return recipe_config("ultrafeedback", shared, **overrides)
