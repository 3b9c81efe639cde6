"""Loading models: the policy (LoRA, last N layers, or every weight trained) and a trained reward model.

This module loads and wires weights; it does not train or compute log-probs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hybridpo.config import ModelConfig
from hybridpo.zoo.checkpoints import resolve

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_policy(cfg: ModelConfig, *, head: str = "causal_lm") -> nn.Module:
    """The model to train, with LoRA applied or all but the last N layers frozen as configured.

    head="causal_lm" loads a language model; head="reward" loads the same checkpoint as
    AutoModelForSequenceClassification with num_labels=1: a causal LM's backbone with a fresh
    scalar head (or a trained reward model, head included).
    """
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    kwargs = dict(
        dtype=DTYPES[cfg.dtype],
        trust_remote_code=cfg.trust_remote_code,
        attn_implementation=cfg.attn_implementation,
    )
    path = resolve(cfg.name_or_path)  # a .gguf file becomes its converted folder (hybridpo.zoo)
    if head == "causal_lm":
        model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    elif head == "reward":
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1, **kwargs)
    else:
        raise ValueError(f"head={head!r}; choose from ['causal_lm', 'reward']")
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    if cfg.finetune == "lora":
        model = apply_lora(model, cfg, task_type="CAUSAL_LM" if head == "causal_lm" else "SEQ_CLS")
    elif cfg.finetune == "last_n_layers":
        # a reward model's score head is new (random): it always trains
        train_last_n_layers(model, cfg.last_n_layers, train_final_norm=cfg.train_final_norm,
                            train_head=cfg.train_head or head == "reward")
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
        raise ValueError("model.train_head=true, but the output head is tied to the input embedding (frozen with the trunk)")
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




def freeze(model: nn.Module) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def load_reward_model(path: str, cfg: ModelConfig) -> nn.Module:
    """A trained reward model (the `rm` method's final/ folder), frozen, for scoring samples."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        resolve(path), num_labels=1, dtype=DTYPES[cfg.dtype], trust_remote_code=cfg.trust_remote_code
    )
    return freeze(model)


