"""π_ref, the model at the start of training, in three forms, cheapest first:

- "disabled_adapter" (LoRA): the same model with its adapter switched off (`peft`'s
  `disable_adapter()` context); no second copy of the weights.
- "frozen_trunk" (last-N-layers training): the first L-N blocks are frozen and shared; only the
  last N blocks, the final norm and the head are copied. When π_ref is asked about the inputs the
  policy has just seen, it reuses the trunk's hidden states from that forward (captured by hooks),
  so the trunk runs once for both models.
- "copy": a frozen deep copy (full fine-tuning).

`Reference` is the role object methods call: `reference.logps(prompts, responses)`.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from hybridpo.config import ModelConfig
from hybridpo.forward import ResponseLogps, response_logps
from hybridpo.models.clock import StepClock
from hybridpo.models.load import decoder_parts, freeze


@dataclass
class Reference:
    """π_ref as the methods see it: `logps(prompts, responses)` without grad.

    `model` is what the log-probs are computed with, inside `scope()` (which switches a LoRA
    adapter off for "disabled_adapter").
    """

    kind: str  # "copy" | "disabled_adapter" | "frozen_trunk"
    model: nn.Module  # the model hybridpo.forward.response_logps runs for π_ref
    disable_adapter_of: nn.Module | None = None  # the peft model whose adapter scope() disables
    pad_id: int = 0  # padding id of the batches (never read as a token: masks come from lengths)
    layout: str = "packed"  # hybridpo.forward.logprobs layout, the policy's
    elementwise: str = "auto"  # response_logps(elementwise=), the policy's (hybridpo.fast.elementwise_for)
    span_kernel: str = "auto"  # response_logps(span_kernel=), the policy's (hybridpo.fast.span_kernel_for)
    train_gemm: str = "auto"  # response_logps(train_gemm=), the policy's (hybridpo.fast.train_gemm_for)
    clock: StepClock = field(default_factory=StepClock)  # where "reference forward" time is counted

    def scope(self):
        if self.kind == "disabled_adapter":
            return self.disable_adapter_of.disable_adapter()
        return contextlib.nullcontext()

    @torch.no_grad()
    def logps(self, prompts: list[list[int]], responses: list[list[list[int]]], *,
              temperature: float = 1.0) -> ResponseLogps:
        """log π_ref,τ(y|x) of every response (hybridpo.forward.response_logps conventions), no grad."""
        with self.clock.time("reference forward"), self.scope():
            return response_logps(self.model, prompts, responses, pad_id=self.pad_id, temperature=temperature,
                                  layout=self.layout, elementwise=self.elementwise, span_kernel=self.span_kernel,
                                  train_gemm=self.train_gemm)


def build_reference(policy: nn.Module, cfg: ModelConfig, **role) -> Reference:
    """π_ref for `policy` as configured (call before training changes the policy); `role` sets
    the Reference's pad_id / layout / elementwise / span_kernel / train_gemm / clock."""
    kind = cfg.reference
    if kind == "auto":
        kind = {"lora": "disabled_adapter", "last_n_layers": "frozen_trunk", "full": "copy"}[cfg.finetune]
    if kind == "disabled_adapter":
        if not hasattr(policy, "disable_adapter"):
            raise ValueError("model.reference=disabled_adapter needs model.finetune=lora")
        return Reference(kind, policy, disable_adapter_of=policy, **role)
    if kind == "frozen_trunk":
        if cfg.finetune != "last_n_layers":
            raise ValueError("model.reference=frozen_trunk needs model.finetune=last_n_layers")
        return Reference(kind, FrozenTrunkReference(policy, cfg.last_n_layers), **role)
    if kind == "copy":
        ref = copy.deepcopy(policy)
        if hasattr(ref, "merge_and_unload"):  # a LoRA policy: fold the adapter into the copy
            ref = ref.merge_and_unload()
        return Reference(kind, freeze(ref), **role)
    raise ValueError(f"model.reference={kind!r}; choose from ['copy', 'disabled_adapter', 'frozen_trunk']")


_CACHE_KWARGS = ("layer_past", "past_key_value", "past_key_values", "cache")


class _TrunkDone(Exception):
    """Raised by a hook to stop a forward once the shared trunk has run."""


class FrozenTrunkReference(nn.Module):
    """π_ref for last-N-layers training: the policy's frozen trunk + frozen copies of the rest.

    It looks like a transformers causal LM to hybridpo.forward: `base_model_prefix` names a
    decoder returning `last_hidden_state`, `get_output_embeddings()` is the frozen head, and
    `forward` returns logits. The policy is watched by two hooks: one records the inputs of its
    decoder, the other the hidden states (and layer arguments: mask, rotary embeddings) entering
    block L-N. A reference call on the same inputs reuses them; other inputs run the policy's
    trunk alone (the hook stops the forward at block L-N).
    """

    base_model_prefix = "decoder"

    def __init__(self, policy: nn.Module, n: int):
        super().__init__()
        parts = decoder_parts(policy)
        self.config = policy.config
        self._policy_decoder = [parts.decoder]  # shared, not owned
        self._split = len(parts.layers) - n  # index of the first copied block
        self.layers = freeze(copy.deepcopy(parts.layers[self._split :]))
        self.final_norm = freeze(copy.deepcopy(parts.final_norm))
        self.head = freeze(copy.deepcopy(parts.head))
        self.decoder = _CopiedTail(self)
        self._seen: tuple | None = None  # (inputs, hidden, layer kwargs) from the policy's last forward
        self._pending_inputs: tuple | None = None
        self._stop = False
        self.trunk_runs = 0  # trunk forwards run by the reference itself (for tests and profiling)
        parts.decoder.register_forward_pre_hook(self._on_decoder, with_kwargs=True)
        parts.layers[self._split].register_forward_pre_hook(self._on_split_layer, with_kwargs=True)

    def get_output_embeddings(self) -> nn.Module:
        return self.head

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0, **kwargs):
        from transformers.modeling_utils import slice_logits_to_keep

        hidden = self.decoder(input_ids, attention_mask=attention_mask, position_ids=position_ids).last_hidden_state
        hidden = slice_logits_to_keep(hidden, logits_to_keep)  # int: the last n; bool mask: those positions
        return CausalLMOutputWithPast(logits=self.head(hidden))

    # -- hooks on the policy -----------------------------------------------------------------
    def _on_decoder(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        cached = kwargs.get("use_cache") or kwargs.get("cache") is not None or kwargs.get("past_key_values") is not None
        self._pending_inputs = None if cached or ids is None else _key(ids, kwargs.get("attention_mask"), kwargs.get("position_ids"))

    def _on_split_layer(self, module, args, kwargs):
        if self._pending_inputs is not None:
            hidden = (args[0] if args else kwargs["hidden_states"]).detach()
            # the copied blocks must not touch the policy's KV cache (a forward without use_cache=False
            # may still have built one): drop it and run them cache-free
            layer_kwargs = {k: v for k, v in kwargs.items() if k not in ("hidden_states", *_CACHE_KWARGS)}
            if "use_cache" in layer_kwargs:
                layer_kwargs["use_cache"] = False
            self._seen = (self._pending_inputs, hidden, layer_kwargs)
            self._pending_inputs = None
        if self._stop:
            raise _TrunkDone

    def trunk(self, input_ids, attention_mask, position_ids) -> tuple:
        """(hidden states entering block L-N, that block's keyword arguments), reused when possible."""
        key = _key(input_ids, attention_mask, position_ids)
        if self._seen is not None and _same(self._seen[0], key):
            return self._seen[1], self._seen[2]
        self.trunk_runs += 1
        self._stop = True
        try:
            with torch.no_grad():
                self._policy_decoder[0](input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
        except _TrunkDone:
            pass
        finally:
            self._stop = False
        return self._seen[1], self._seen[2]


class _CopiedTail(nn.Module):
    """The reference's "decoder": shared trunk hidden states -> frozen copied blocks -> final norm."""

    def __init__(self, owner: FrozenTrunkReference):
        super().__init__()
        self._owner = [owner]

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, use_cache=False, **kwargs):
        owner = self._owner[0]
        hidden, layer_kwargs = owner.trunk(input_ids, attention_mask, position_ids)
        with torch.no_grad():
            for layer in owner.layers:
                out = layer(hidden, **layer_kwargs)
                hidden = out[0] if isinstance(out, tuple) else out
            return BaseModelOutputWithPast(last_hidden_state=owner.final_norm(hidden))


def _key(ids, mask, pos) -> tuple:
    return tuple(None if t is None else t.detach() for t in (ids, mask, pos))


def _same(a: tuple, b: tuple) -> bool:
    return all(
        (x is None and y is None) or (x is not None and y is not None and x.shape == y.shape and torch.equal(x, y))
        for x, y in zip(a, b)
    )


