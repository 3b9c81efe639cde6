"""Reward-model scoring: r(x, y) read at the last real token of prompt + response.

The reward model is a transformers sequence-classification model with one label (a causal LM's
backbone with a scalar head). Its own forward picks the "last token" by searching for the pad id,
which is wrong when pad == EOS (GPT-2 style tokenizers) because every response ends in EOS. So we
run the backbone and apply the head ourselves at each response's last token, taken from the list
lengths, never from token ids.

Two layouts give the same scores (tested, values and gradients): "padded", each (prompt,
response) its own right-padded row, and "packed" (the default where the model takes a 4D mask):
each prompt once, followed by all of its responses, as hybridpo.forward.layout packs them for
log-probs. A pair then costs one prompt pass instead of two.

The backbone runs inside hybridpo.fast.block_scope, as the log-prob forwards do: its products on
the faster library where `auto` measured one (oneDNN on an AMD EPYC), the SwiGLU MLP keeping two of
its four tensors, the elementwise chains compiled on wide models. Outside it, a reward model on an
AMD EPYC multiplied at MKL's ~180 GFLOP/s: `make demo`'s reward model took 190 s for 32 steps there
against 91 s on an Intel Xeon (docs/demo.md). SmolLM2-135M as a reward model on a DPO batch of 8
pairs, forward + backward, the two alternated in one process: 21.04 -> 15.08 s inside, scores within
5.1e-6 (docs/bench/amd/reward_scope.md).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hybridpo.fast import block_scope
from hybridpo.forward import hf
from hybridpo.forward import layout as lay


LAYOUTS = ("auto", "packed", "padded")


def reward_scores(model: nn.Module, prompts: list[list[int]], responses: list[list[list[int]]], *, pad_id: int,
                  layout: str = "auto") -> Tensor:
    """Scalar rewards of every response of every prompt, prompt-major order.   -> (N,) fp32

    Same input convention as hybridpo.forward.response_logps. Gradients flow when the caller has
    grad enabled (reward-model training); wrap in torch.no_grad() to score samples. `layout`
    "auto" packs where `hf.mask_unsupported_reason(model)` allows it.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but responses for {len(responses)}")
    seqs = [p + r for p, rs in zip(prompts, responses) for r in rs]
    if not seqs or min(len(s) for s in seqs) == 0:
        raise ValueError("reward_scores needs at least one non-empty prompt + response")
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}; choose from {list(LAYOUTS)}")
    inner = hf.base_model(model)
    backbone = getattr(inner, inner.base_model_prefix)
    head = getattr(inner, "score", None)
    if head is None:
        head = inner.classifier
    device = hf.device_of(model)
    reason = hf.mask_unsupported_reason(model)
    if layout == "packed" and reason is not None:
        raise hf.PackingUnsupported(f"layout='packed' is not available: {reason}; pass layout='padded'")
    if layout != "padded" and reason is None and all(p for p in prompts):
        packed = lay.pack(prompts, responses, pad_id)
        window = hf.sliding_window(inner.config)
        mask = lay.packed_attention_mask(packed.segment.to(device), head.weight.dtype, packed.group.to(device),
                                         packed.position_ids.to(device), window)
        with block_scope(model):
            hidden = backbone(input_ids=packed.input_ids.to(device), attention_mask=mask,
                              position_ids=packed.position_ids.to(device), use_cache=False).last_hidden_state  # (R, T, H)
        h_last = hidden.reshape(-1, hidden.shape[-1])[packed.response_last.to(device)]  # (N, H)
        return head(h_last).squeeze(-1).float()
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)  # (N, T) right-padded
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = torch.tensor(s, dtype=torch.long)
        attn[row, : len(s)] = 1
    with block_scope(model):
        hidden = backbone(input_ids=ids.to(device), attention_mask=attn.to(device), use_cache=False).last_hidden_state  # (N, T, H)
    last = torch.tensor([len(s) - 1 for s in seqs], device=device)  # (N,) last real token
    h_last = hidden[torch.arange(len(seqs), device=device), last]  # (N, H)
    return head(h_last).squeeze(-1).float()  # (N,)
