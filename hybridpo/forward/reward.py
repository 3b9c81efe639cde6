"""Reward-model scoring: r(x, y) read at the last real token of prompt + response.

The reward model is a transformers sequence-classification model with one label (a causal LM's
backbone with a scalar head). Its own forward picks the "last token" by searching for the pad id,
which is wrong when pad == EOS (GPT-2 style tokenizers) because every response ends in EOS. So we
run the backbone and apply the head ourselves at position len(prompt) + len(response) - 1, taken
from the list lengths, never from token ids.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hybridpo.forward import hf


def reward_scores(model: nn.Module, prompts: list[list[int]], responses: list[list[list[int]]], *, pad_id: int) -> Tensor:
    """Scalar rewards of every response of every prompt, prompt-major order.   -> (N,) fp32

    Same input convention as hybridpo.forward.response_logps. Gradients flow when the caller has
    grad enabled (reward-model training); wrap in torch.no_grad() to score samples.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but responses for {len(responses)}")
    seqs = [p + r for p, rs in zip(prompts, responses) for r in rs]
    if not seqs or min(len(s) for s in seqs) == 0:
        raise ValueError("reward_scores needs at least one non-empty prompt + response")
    inner = hf.base_model(model)
    backbone = getattr(inner, inner.base_model_prefix)
    head = getattr(inner, "score", None)
    if head is None:
        head = inner.classifier
    device = hf.device_of(model)
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # (N, T) right-padded
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = torch.tensor(s, dtype=torch.long)
        attn[row, : len(s)] = 1
    hidden = backbone(input_ids=ids.to(device), attention_mask=attn.to(device), use_cache=False).last_hidden_state  # (N, T, H)
    last = torch.tensor([len(s) - 1 for s in seqs], device=device)  # (N,) last real token
    h_last = hidden[torch.arange(len(seqs), device=device), last]  # (N, H)
    return head(h_last).squeeze(-1).float()  # (N,)
