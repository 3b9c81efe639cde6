"""Loading the policy, its reference π_ref and the reward model (random models: hybridpo.zoo).

Three ways to get π_ref (the model at the start of training), cheapest first:
- "disabled_adapter" (LoRA): the same model with its adapter switched off (`peft`'s
  `disable_adapter()` context); no second copy of the weights.
- "frozen_trunk" (last-N-layers training): the first L-N blocks are frozen and shared. Only the
  last N blocks, the final norm and the head are copied. When π_ref is asked about the inputs the
  policy has just seen, it reuses the trunk's hidden states from that forward (captured by hooks),
  so the trunk runs once for both models.
- "copy": a frozen deep copy (full fine-tuning).

This module loads and wires models; it does not train or compute log-probs.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch
from torch import nn
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast

from hybridpo.config import ModelConfig
from hybridpo.zoo import init_model  # noqa: F401  (moved to hybridpo.zoo; callers still import it from here)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ------------------------------------------------------------------------------------------------
# policy


def load_policy(cfg: ModelConfig, *, head: str = "causal_lm") -> nn.Module:
    """The model to train, with LoRA applied or all but the last N layers frozen as configured.

    head="causal_lm" loads a language model; head="reward" loads the same checkpoint as
    AutoModelForSequenceClassification with num_labels=1: a causal LM's backbone with a fresh
    scalar head (or a trained reward model, head included).
    """
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    kwargs = dict(
        dtype=_DTYPES[cfg.dtype],
        trust_remote_code=cfg.trust_remote_code,
        attn_implementation=cfg.attn_implementation,
    )
    if head == "causal_lm":
        model = AutoModelForCausalLM.from_pretrained(cfg.name_or_path, **kwargs)
    elif head == "reward":
        model = AutoModelForSequenceClassification.from_pretrained(cfg.name_or_path, num_labels=1, **kwargs)
    else:
        raise ValueError(f"head={head!r}; choose from ['causal_lm', 'reward']")
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    if cfg.finetune == "lora":
        model = apply_lora(model, cfg, task_type="CAUSAL_LM" if head == "causal_lm" else "SEQ_CLS")
    elif cfg.finetune == "last_n_layers":
        # a reward model's score head is new (random): it must train
        train_last_n_layers(model, cfg.last_n_layers, train_head=head == "reward")
    return model


def apply_lora(model: nn.Module, cfg: ModelConfig, task_type: str) -> nn.Module:
    """Wrap in a peft LoRA model: W + (alpha / r) B A on the target modules, B initialised to 0."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=cfg.lora.r,
        lora_alpha=cfg.lora.alpha,
        lora_dropout=cfg.lora.dropout,
        target_modules=cfg.lora.target_modules,
        task_type=task_type,
    )
    return get_peft_model(model, lora)


def train_last_n_layers(model: nn.Module, n: int, *, train_final_norm: bool = False, train_head: bool = False) -> None:
    """Freeze everything but the last n blocks (paper §5.1.2: "only the last 4 layers").

    train_final_norm / train_head add the norm after the last block / the output head. A head tied
    to the input embedding is that embedding, the trunk's first layer: it stays frozen, and asking
    to train it is an error. A reward model's fresh score head is never tied.
    """
    parts = decoder_parts(model)
    total = len(parts.layers)
    if not 1 <= n <= total:
        raise ValueError(f"model.last_n_layers={n}, but the model has {total} layers")
    tied = parts.head.weight is model.get_input_embeddings().weight
    if train_head and tied:
        raise ValueError("train_head=True, but the output head is tied to the input embedding (frozen with the trunk)")
    for p in model.parameters():
        p.requires_grad_(False)
    trainable = list(parts.layers[total - n :])
    if train_final_norm:
        trainable.append(parts.final_norm)
    if train_head:
        trainable.append(parts.head)
    for module in trainable:
        for p in module.parameters():
            p.requires_grad_(True)


@dataclass
class DecoderParts:
    decoder: nn.Module  # the backbone (embeddings + blocks + final norm): model.<base_model_prefix>
    layers: nn.ModuleList  # the transformer blocks, input side first
    final_norm: nn.Module  # the norm after the last block
    head: nn.Module  # hidden -> logits (LM head) or -> scalar (reward score)


def decoder_parts(model: nn.Module) -> DecoderParts:
    """Find blocks, final norm and head of a transformers decoder (GPT-NeoX, Llama, GPT-2 naming)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = getattr(inner, inner.base_model_prefix, None)
    layers = next((getattr(decoder, n) for n in ("layers", "h", "blocks") if hasattr(decoder, n)), None)
    norm = next((getattr(decoder, n) for n in ("final_layer_norm", "norm", "ln_f") if hasattr(decoder, n)), None)
    head = getattr(inner, "score", None)
    if head is None:
        head = inner.get_output_embeddings()
    if layers is None or norm is None or head is None:
        raise ValueError(f"{type(inner).__name__}: cannot find decoder blocks / final norm / head")
    return DecoderParts(decoder=decoder, layers=layers, final_norm=norm, head=head)


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


# ------------------------------------------------------------------------------------------------
# reference


@dataclass
class Reference:
    """π_ref: call `model` for log-probs inside `scope()` (which switches a LoRA adapter off)."""

    kind: str  # "copy" | "disabled_adapter" | "frozen_trunk"
    model: nn.Module  # what to pass to hybridpo.logprobs.response_logps
    disable_adapter_of: nn.Module | None = None  # the peft model whose adapter scope() disables

    def scope(self):
        if self.kind == "disabled_adapter":
            return self.disable_adapter_of.disable_adapter()
        return contextlib.nullcontext()


def build_reference(policy: nn.Module, cfg: ModelConfig) -> Reference:
    """π_ref for `policy` as configured (call before training changes the policy)."""
    kind = cfg.reference
    if kind == "auto":
        kind = {"lora": "disabled_adapter", "last_n_layers": "frozen_trunk", "full": "copy"}[cfg.finetune]
    if kind == "disabled_adapter":
        if not hasattr(policy, "disable_adapter"):
            raise ValueError("model.reference=disabled_adapter needs model.finetune=lora")
        return Reference(kind, policy, disable_adapter_of=policy)
    if kind == "frozen_trunk":
        if cfg.finetune != "last_n_layers":
            raise ValueError("model.reference=frozen_trunk needs model.finetune=last_n_layers")
        return Reference(kind, FrozenTrunkReference(policy, cfg.last_n_layers))
    if kind == "copy":
        ref = copy.deepcopy(policy)
        if hasattr(ref, "merge_and_unload"):  # a LoRA policy: fold the adapter into the copy
            ref = ref.merge_and_unload()
        return Reference(kind, freeze(ref))
    raise ValueError(f"model.reference={kind!r}; choose from ['copy', 'disabled_adapter', 'frozen_trunk']")


def freeze(model: nn.Module) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


_CACHE_KWARGS = ("layer_past", "past_key_value", "past_key_values", "cache")


class _TrunkDone(Exception):
    """Raised by a hook to stop a forward once the shared trunk has run."""


class FrozenTrunkReference(nn.Module):
    """π_ref for last-N-layers training: the policy's frozen trunk + frozen copies of the rest.

    It looks like a transformers causal LM to hybridpo.logprobs: `base_model_prefix` names a
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


# ------------------------------------------------------------------------------------------------
# reward model


def load_reward_model(path: str, cfg: ModelConfig) -> nn.Module:
    """A trained reward model (the `rm` method's final/ folder), frozen, for scoring samples."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, dtype=_DTYPES[cfg.dtype], trust_remote_code=cfg.trust_remote_code
    )
    return freeze(model)
