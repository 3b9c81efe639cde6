"""The fixed benchmark workloads: model shape, data, batch, steps, optimiser settings.

Every runner (hybridpo's and TRL's) builds its model and batches from here, so both sides start
from the same weights (same seed, same config) and see the same token ids in the same order.

- tiny:  4-layer, 256-wide GPT-NeoX, 512-token vocabulary, 512 synthetic pairs (prompts ~63
         tokens, responses ~38 incl. EOS). The vocabulary is a word-level tokenizer whose word
         "t17" is id 17 (`tiny_tokenizer`), so TRL, which only takes text, tokenizes to exactly the
         ids hybridpo is given.
- tldr:  the first 256 shared TL;DR pairs, prompt + "\\nTL;DR:", the real Pythia tokenizer, a
         Pythia-70m-shaped random model (vocab 50304, untied head).
- hypo:  the tldr data and model with HyPO's k = 2 online samples of (up to) 53 tokens per prompt.
- hypo-160m: hypo with a Pythia-160m-shaped model (12 x 768); not in `--workload all`, no bar.
- smollm2-dpo, smollm2-hypo, smollm2-rloo: the real SmolLM2-135M-Instruct (`hybridpo.zoo`'s
         "smollm2-135m-instruct": Llama, 30 blocks of width 576, 9 / 3 heads, tied 49,152-row head)
         on the first 64 UltraFeedback pairs whose prompt + longer response fit 512 tokens under
         its chat template (the data layer's `recipe: ultrafeedback`, over-long pairs dropped:
         prompts 36-486 tokens, mean 128; responses 2-451, mean 131, EOS included); batch 8, so
         8 steps see each pair once. HyPO and RLOO: k = 2 samples of 53 tokens per prompt.
         TRL is given the rendered prompt text and each response's text up to its EOS, which it
         tokenizes back to exactly these ids (checked). `weights="random"`, `device`, `precision`
         give the same shapes and batches with seeded random weights in bf16 on a GPU
         (docs/bench/gpu_check.sh).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from hybridpo.data import recipes

EOS_ID = 0  # "<|endoftext|>" in the Pythia tokenizer and in the tiny vocabulary
PAD_ID = 1  # "<|padding|>"
TLDR_SUFFIX = "\nTL;DR:"


@dataclass(frozen=True)
class Workload:
    name: str  # key on the command line and in the table
    layers: int  # transformer blocks
    hidden: int  # model width d
    heads: int  # attention heads (head dim = hidden / heads)
    intermediate: int  # MLP width (GPT-NeoX: 4 d)
    vocab: int  # embedding / LM-head rows
    data: str  # "synthetic" (seeded random ids) or "tldr" (shared TL;DR parquet)
    n_pairs: int  # pairs in the training set (TRL's precompute covers all of them)
    batch_pairs: int  # preference pairs per optimiser step
    steps: int  # optimiser steps per run; the first is the untimed warm-up
    beta: float = 0.05  # DPO / HyPO KL strength
    lr: float = 3e-6  # AdamW learning rate, linear decay to 0 over `steps` (TRL's default schedule)
    max_length: int = 1024  # prompt + response cap; no workload pair reaches it (no truncation)
    prompt_len: tuple[int, int] = (48, 78)  # synthetic prompt length range, inclusive (mean 63)
    response_len: tuple[int, int] = (28, 48)  # synthetic response length range incl. EOS (mean 38)
    hypo_k: int = 2  # HyPO online samples per prompt
    hypo_new_tokens: int = 53  # HyPO sample length cap (paper's TL;DR response budget)
    rloo_k: int = 2  # RLOO completions per prompt
    rloo_new_tokens: int = 32  # RLOO completion length (sampled to exactly this many, no EOS stop)
    seed: int = 0  # model init and synthetic data
    model: str = ""  # "": a GPT-NeoX of the shape above, built here; else a hybridpo.zoo name (its checkpoint; the shape fields then document it)
    weights: str = "pretrained"  # with `model`: "pretrained" (the checkpoint's weights) or "random" (its config, seeded init)
    fit_length: int = 512  # ultrafeedback: keep the pairs whose prompt + longer response have at most this many tokens
    last_n_layers: int = 4  # the "last-n" variants train only the last n blocks (hybridpo's reference shares the frozen trunk)
    device: str = "cpu"  # where both sides run: "cpu", or "cuda" for the GPU check
    precision: str = "fp32"  # "fp32", or "bf16": autocast over fp32 weights on both sides (GPU check)


WORKLOADS: dict[str, Workload] = {
    "tiny": Workload("tiny", 4, 256, 4, 1024, 512, "synthetic", n_pairs=512, batch_pairs=8, steps=20),
    "tldr": Workload("tldr", 6, 512, 8, 2048, 50304, "tldr", n_pairs=256, batch_pairs=8, steps=6),
    "hypo": Workload("hypo", 6, 512, 8, 2048, 50304, "tldr", n_pairs=256, batch_pairs=8, steps=6),
    # not in `--workload all`, no bar: hypo at the Pythia-160m shape, where the LM head no longer
    # outweighs the transformer body per scored token (see README, Performance)
    "hypo-160m": Workload("hypo-160m", 12, 768, 12, 3072, 50304, "tldr", n_pairs=256, batch_pairs=8, steps=6),
    # SmolLM2-135M-Instruct: a pretrained Llama-family model whose body, not its head, dominates the work
    **{name: Workload(name, 30, 576, 9, 1536, 49152, "ultrafeedback", n_pairs=64, batch_pairs=8, steps=8,
                      model="smollm2-135m-instruct", rloo_new_tokens=53)
       for name in ("smollm2-dpo", "smollm2-hypo", "smollm2-rloo")},
}


def get_workload(name: str) -> Workload:
    if name not in WORKLOADS:
        raise ValueError(f"workload={name!r}; choose from {sorted(WORKLOADS)}")
    return WORKLOADS[name]


@dataclass(frozen=True)
class Pair:
    """One preference pair as ids (for hybridpo) and as text that tokenizes to the same ids (for TRL)."""

    prompt_ids: list[int]
    chosen_ids: list[int]  # ends with EOS
    rejected_ids: list[int]  # ends with EOS
    prompt: str
    chosen: str  # without the EOS token: TRL appends it itself
    rejected: str


def shared_dir() -> Path:
    """hybridpo.data.recipes.shared_dir(), which the benchmark cannot run without: say so plainly."""
    path = recipes.shared_dir()
    if not path.is_dir():
        raise FileNotFoundError(f"shared data directory {path} not found (expected next to the repository)")
    return path


def build_model(w: Workload):
    """The workload's model in fp32: the zoo checkpoint (or its shape with seeded random weights), or
    a GPT-NeoX with the workload's shape, seeded init, no dropout, untied head."""
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    if w.model:
        from transformers import AutoConfig, AutoModelForCausalLM

        from hybridpo.zoo import resolve

        path = resolve(w.model)
        if w.weights == "pretrained":
            return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        if w.weights != "random":
            raise ValueError(f"workload {w.name!r}: weights={w.weights!r}; choose from ['pretrained', 'random']")
        torch.manual_seed(w.seed)
        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path), dtype=torch.float32)

    config = GPTNeoXConfig(
        vocab_size=w.vocab,
        hidden_size=w.hidden,
        num_hidden_layers=w.layers,
        num_attention_heads=w.heads,
        intermediate_size=w.intermediate,
        max_position_embeddings=2048,
        rotary_pct=0.25,  # Pythia
        use_parallel_residual=True,  # Pythia
        tie_word_embeddings=False,  # Pythia's head is untied
        hidden_dropout=0.0,
        attention_dropout=0.0,
        bos_token_id=EOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=PAD_ID,
    )
    torch.manual_seed(w.seed)
    return GPTNeoXForCausalLM(config).float()


def tiny_tokenizer(vocab: int = 512):
    """Word-level tokenizer over "t2" ... "t{vocab-1}" (id = the number) plus EOS 0 and PAD 1."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = {"<|endoftext|>": EOS_ID, "<|padding|>": PAD_ID}
    words.update({f"t{i}": i for i in range(2, vocab)})
    tok = Tokenizer(models.WordLevel(vocab=words, unk_token="<|padding|>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens(["<|endoftext|>", "<|padding|>"])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|padding|>")


def pythia_tokenizer():
    from transformers import PreTrainedTokenizerFast

    path = shared_dir() / "tokenizers" / "pythia" / "tokenizer.json"
    return PreTrainedTokenizerFast(tokenizer_file=str(path), eos_token="<|endoftext|>", pad_token="<|padding|>")


def load_tokenizer(w: Workload):
    if w.model:
        from hybridpo.data import load_tokenizer as load
        from hybridpo.zoo import resolve

        return load(resolve(w.model))
    return tiny_tokenizer(w.vocab) if w.data == "synthetic" else pythia_tokenizer()


def build_pairs(w: Workload, tokenizer=None) -> list[Pair]:
    """The workload's `n_pairs` training pairs, in training order."""
    if w.data == "synthetic":
        return _synthetic_pairs(w)
    if w.data == "tldr":
        return _tldr_pairs(w, tokenizer or pythia_tokenizer())
    if w.data == "ultrafeedback":
        return _ultrafeedback_pairs(w, tokenizer or load_tokenizer(w))
    raise ValueError(f"workload {w.name!r}: data={w.data!r}; choose from ['synthetic', 'tldr', 'ultrafeedback']")


def _synthetic_pairs(w: Workload) -> list[Pair]:
    rng = random.Random(w.seed)

    def words(n: int) -> list[int]:
        return [rng.randrange(2, w.vocab) for _ in range(n)]

    def text(ids: list[int]) -> str:
        return " ".join(f"t{i}" for i in ids)

    pairs = []
    for _ in range(w.n_pairs):
        prompt = words(rng.randint(*w.prompt_len))
        chosen = words(rng.randint(*w.response_len) - 1)
        rejected = words(rng.randint(*w.response_len) - 1)
        pairs.append(
            Pair(prompt, chosen + [EOS_ID], rejected + [EOS_ID], text(prompt), " " + text(chosen), " " + text(rejected))
        )
    return pairs


def _tldr_pairs(w: Workload, tokenizer, path: Path | None = None) -> list[Pair]:
    import pandas as pd

    path = path or shared_dir() / "data" / "tldr" / "tldr_comparisons_10k.parquet"
    frame = pd.read_parquet(path, columns=["prompt", "chosen", "rejected"]).head(w.n_pairs)
    if len(frame) < w.n_pairs:
        raise ValueError(f"{path}: {len(frame)} rows, workload {w.name!r} needs {w.n_pairs}")
    pairs = []
    for row, (prompt, chosen, rejected) in enumerate(frame.itertuples(index=False), start=1):
        responses = []
        for field, value in (("chosen", chosen), ("rejected", rejected)):
            if not isinstance(value, str) or not value.startswith("TL;DR:"):
                raise ValueError(f"{path}: row {row}, field {field!r}: expected text starting with 'TL;DR:'")
            responses.append(value[len("TL;DR:") :])  # the prompt now ends with "TL;DR:"
        if not isinstance(prompt, str) or not prompt:
            raise ValueError(f"{path}: row {row}, field 'prompt': expected non-empty text")
        prompt = prompt + TLDR_SUFFIX
        ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in (prompt, *responses)]
        pairs.append(Pair(ids[0], ids[1] + [EOS_ID], ids[2] + [EOS_ID], prompt, responses[0], responses[1]))
    return pairs


def _ultrafeedback_pairs(w: Workload, tokenizer) -> list[Pair]:
    """The first `n_pairs` UltraFeedback training pairs that fit `fit_length` tokens, as the data
    layer renders them (`recipe: ultrafeedback`, over-long pairs dropped, no held-out split)."""
    from hybridpo.data import prepare_preferences, ultrafeedback

    cfg = ultrafeedback(eval_source=None, max_prompt_length=w.fit_length - 1, max_length=w.fit_length,
                        on_overlong="drop")
    examples = prepare_preferences(cfg, tokenizer).train[: w.n_pairs]
    if len(examples) < w.n_pairs:
        raise ValueError(f"{cfg.source}: {len(examples)} pairs fit {w.fit_length} tokens, workload {w.name!r} needs {w.n_pairs}")
    eos = tokenizer.eos_token

    def text(response: str) -> str:  # up to its first EOS (the chat turn's "<|im_end|>\n"): TRL appends EOS itself
        return response.split(eos)[0]

    return [Pair(ex.prompt_ids, ex.chosen_ids, ex.rejected_ids, ex.prompt, text(ex.chosen), text(ex.rejected))
            for ex in examples]


def low_id_reward(completion_ids: list[list[int]], vocab: int) -> list[float]:
    """The RLOO workload's programmatic reward (both sides): share of tokens in the vocabulary's lower half."""
    return [sum(1 for t in ids if t < vocab // 2) / max(len(ids), 1) for ids in completion_ids]


def batches(w: Workload, pairs: list[Pair]) -> list[list[Pair]]:
    """The `steps` consecutive batches of `batch_pairs` pairs (sequential order, no shuffling)."""
    need = w.steps * w.batch_pairs
    if len(pairs) < need:
        raise ValueError(f"workload {w.name!r}: {w.steps} steps x {w.batch_pairs} pairs need {need}, have {len(pairs)}")
    return [pairs[i : i + w.batch_pairs] for i in range(0, need, w.batch_pairs)]
