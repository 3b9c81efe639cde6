"""Text -> validated examples -> token ids. Never builds model tensors.

    from hybridpo.data import DataConfig, load_tokenizer, load_preferences
    tok = load_tokenizer("../shared/tokenizers/pythia/tokenizer.json")
    train, eval_ = load_preferences(tldr(), tok)

Modules: `config` (DataConfig), `sources` (files, `datasets`), `formats` (row formats),
`chat` (chat templates), `tokenize` (boundary, EOS, truncation, load_tokenizer), `cache`,
`load` (the pipeline), `recipes` (TL;DR, UltraFeedback settings), `examples` (what comes out).
"""

from hybridpo.data.config import RENDERING_FIELDS, DataConfig, recipe_config, tldr, ultrafeedback
from hybridpo.data.examples import DataError, DataStats, PreferenceExample, PromptExample, split_stats
from hybridpo.data.load import (
    Prepared,
    load_preferences,
    load_prompts,
    prepare_preferences,
    prepare_prompts,
    split_by_group,
)
from hybridpo.data.recipes import RECIPES, recipe_settings
from hybridpo.data.tokenize import load_tokenizer

__all__ = [
    "DataConfig", "RENDERING_FIELDS", "DataError", "DataStats", "PreferenceExample", "PromptExample", "Prepared",
    "load_preferences", "load_prompts", "prepare_preferences", "prepare_prompts", "split_by_group", "split_stats",
    "RECIPES", "recipe_config", "recipe_settings", "tldr", "ultrafeedback", "load_tokenizer",
]
