"""The issue-17 workload on SmolLM2-135M-Instruct: 8 UltraFeedback pairs (chat template, prompt +
response under 512 tokens) + k = 2 samples of 50 tokens per prompt, for profiling the packed and
prompt-pass paths side by side in one process. Imported by the scripts beside it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "families"))

from family_models import SMOLLM2_GGUF, smollm2_dir  # noqa: E402


def smollm2(layers: int | None = None, seed_random: int | None = None):
    """The real model (fp32), optionally cut to its first `layers` blocks; with `seed_random`, the
    same shape with random weights instead (no load)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = smollm2_dir()
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    if layers is not None:
        model.model.layers = model.model.layers[:layers]
        model.config.num_hidden_layers = layers
    return model.train(), tok


def pairs_and_samples(tok, n_pairs=8, k=2, sample_len=50, max_total=512, seed=0):
    """(prompts, pairs [[chosen, rejected]], samples [[s_1..s_k]]) as token ids."""
    from hybridpo.data.load import load_preferences
    from hybridpo.data.recipes import ultrafeedback

    cfg = ultrafeedback()  # then keep the pairs that fit max_total untruncated
    train, _ = load_preferences(cfg, tok)
    rows = [ex for ex in train if len(ex.prompt_ids) + max(len(ex.chosen_ids), len(ex.rejected_ids)) <= max_total
            and ex.chosen_ids and ex.rejected_ids][:n_pairs]
    g = torch.Generator().manual_seed(seed)
    prompts = [ex.prompt_ids for ex in rows]
    pairs = [[ex.chosen_ids, ex.rejected_ids] for ex in rows]
    samples = [[torch.randint(100, 40000, (sample_len,), generator=g).tolist() for _ in range(k)] for _ in rows]
    return prompts, pairs, samples
