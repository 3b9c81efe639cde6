"""Training configuration: dataclasses with a comment on every field, loaded from YAML.

`load_config(path, overrides)` reads a YAML file (or none: `hybridpo train method=dpo
model.name_or_path=... data.source=...`), applies `key=value` overrides with dotted keys
(`optim.lr=1e-5`, `method_args.beta=0.1`, `data.max_rows=64`), and checks every value against the
field's type, so a typo or a wrong type fails before any model is loaded, naming the file and the
dotted key. The `data:` section is the data layer's own `DataConfig` (with its `recipe:` key);
`method_args:` is resolved to the chosen method's own `Config` dataclass
(`hybridpo.methods.METHODS[name].Config`, a `MethodArgs`), whose `__post_init__` checks its values,
so a new method brings its options without touching this file. The resolved config (every default
filled in) is saved as RUN/config.yaml; `--resume` reads it back through the same checks.

`read_yaml` + `build` are the one reader every YAML of the project goes through (training configs,
the experiments' configs): unknown keys, wrong types and out-of-range values all end in a
`ConfigError` naming the file and the dotted key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from hybridpo.data.config import DataConfig
from hybridpo.data.examples import DataError
from hybridpo.methods.base import MethodArgs


class ConfigError(ValueError):
    """A bad configuration: the message names the file and the dotted key."""


FINETUNE = ("full", "lora", "last_n_layers")
REFERENCES = ("auto", "copy", "disabled_adapter", "frozen_trunk")
DTYPES = ("float32", "bfloat16", "float16")
SCHEDULES = ("cosine", "linear", "constant")
PRECISIONS = ("no", "bf16", "fp16")
LAYOUTS = ("packed", "padded")  # hybridpo.forward.logprobs.LAYOUTS
DECODERS = ("auto", "lean", "neox", "llama", "transformers")  # hybridpo.fast.DECODERS
KV_CACHES = ("auto", "preallocated", "dynamic")  # hybridpo.fast.KV_CACHES
ELEMENTWISE = ("auto", "compiled", "eager")  # hybridpo.fast.ELEMENTWISE
DECODE_GEMMS = ("auto", "panels", "library")  # hybridpo.fast.DECODE_GEMMS
SPAN_KERNELS = ("auto", "ours", "flash")  # hybridpo.fast.SPAN_KERNELS
TRAIN_GEMMS = ("auto", "onednn", "library")  # hybridpo.fast.TRAIN_GEMMS
SAMPLERS = ("builtin", "generate")  # hybridpo.loop.SAMPLERS
SWITCHES = ("auto", "on", "off")


@dataclass
class LoraConfig:
    r: int = 8  # LoRA rank (paper TL;DR: 1024)
    alpha: float = 16.0  # LoRA scale numerator: the update is (alpha / r) B A (paper TL;DR: 2048)
    dropout: float = 0.0  # dropout on the LoRA branch input (paper TL;DR: 0)
    target_modules: list[str] | str | None = None  # module names, "all-linear", or None = peft's default for the architecture
    save_merged: bool = True  # the final model is saved with the adapter merged in (loadable as a plain model); checkpoints always hold the adapter


@dataclass
class ModelConfig:
    name_or_path: str = ""  # the policy (or, for `rm`, the backbone): hub name (EleutherAI/pythia-1.4b-deduped) or local folder; required
    tokenizer: str = ""  # hub name, folder or bare tokenizer.json; "" = name_or_path
    trust_remote_code: bool = False  # run Python code shipped with a hub repo; only for repos you trust
    dtype: str = "float32"  # weight dtype, one of DTYPES; fp32 master weights are safest for training
    attn_implementation: str = "sdpa"  # transformers attention kernel; the packed log-prob layout needs "sdpa" or "eager"
    finetune: str = "full"  # which weights train, one of FINETUNE
    lora: LoraConfig = field(default_factory=LoraConfig)  # used when finetune = lora
    last_n_layers: int = 4  # used when finetune = last_n_layers: the last N blocks train (paper §5.1.2: 4)
    train_final_norm: bool = False  # finetune = last_n_layers: also train the norm after the last block
    train_head: bool = False  # finetune = last_n_layers: also train an untied output head (a tied one stays frozen: it is the input embedding)
    reference: str = "auto"  # π_ref, one of REFERENCES; auto = disabled_adapter (lora), frozen_trunk (last_n_layers), copy (full)
    reward_model: str = ""  # folder of a trained reward model (`rm` output) for methods that score samples; "" = none
    gradient_checkpointing: bool = False  # recompute activations in the backward pass (less memory, ~30% slower)


@dataclass
class OptimConfig:
    lr: float = 1e-5  # AdamW peak learning rate
    weight_decay: float = 0.0  # AdamW decoupled weight decay
    adam_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW (β1, β2)
    adam_eps: float = 1e-8  # AdamW ε
    schedule: str = "cosine"  # learning-rate decay after warm-up, one of SCHEDULES (to 0 at max_steps)
    warmup_steps: int = 0  # linear warm-up from 0 over this many optimizer steps
    warmup_ratio: float = 0.0  # used when warmup_steps = 0: warm-up as a share of the total steps
    max_grad_norm: float = 1.0  # clip the global gradient norm to this; 0 = no clipping (the norm is still logged)
    batch_size: int = 8  # examples per micro-batch per process (a preference pair is one example)
    grad_accum: int = 1  # micro-batches per optimizer step; global batch = batch_size * grad_accum * processes
    max_steps: int = 0  # optimizer steps to run; 0 = as many as `epochs` passes over the training data take
    epochs: float = 1.0  # used when max_steps = 0: passes over the training data (fractions allowed)


@dataclass
class RunConfig:
    out_dir: str = "runs/train"  # run folder: config.yaml, metrics.jsonl, checkpoints/, final/
    seed: int = 0  # seeds model init (where random), data order, dropout and sampling
    shuffle: bool = True  # a seeded permutation of the training examples each epoch; false = file order
    mixed_precision: str = "no"  # autocast, one of PRECISIONS; bf16/fp16 only where the device supports them
    log_every: int = 1  # write a metrics.jsonl row every N optimizer steps
    eval_every: int = 0  # evaluate on the held-out split every N steps; 0 = only at the end
    eval_examples: int = 256  # held-out examples per evaluation (the first N of the eval split); 0 = all
    eval_kl_samples: int = 0  # > 0: each evaluation also estimates KL(π‖π_ref) on the held-out prompts (eval/kl: the paper's Figure 1), this many samples per prompt
    eval_max_new_tokens: int = 53  # length cap of those samples (paper TL;DR: 53)
    save_every: int = 0  # checkpoint every N steps; 0 = only at the end (and on SIGTERM / Ctrl-C)
    keep_checkpoints: int = 2  # newest checkpoints kept on disk; older ones are deleted after a save
    tensorboard: bool = False  # also write metrics to RUN/tensorboard (needs the `tensorboard` package)
    progress: bool = True  # tqdm progress bar with loss and rate on the main process


@dataclass
class SpeedConfig:
    """Speed tricks and layouts: each gives the same numbers as the plain path (tested), and each
    `auto` follows the rule stated, and measured, in hybridpo/fast/__init__.py."""

    logprob_layout: str = "packed"  # log-prob layout (hybridpo.forward): "packed" (each prompt once per row) or "padded" (the plain reference)
    share_prompt: str = "auto"  # one prompt pass per step for sampling and log-probs (online methods): "auto" where it gives the same numbers, "on", "off"
    decoder: str = "auto"  # sampler's decode step, one of DECODERS: "auto" = the family's lean step (GPT-NeoX, Llama) for fp32 weights on CPU outside autocast, transformers' forward elsewhere
    kv_cache: str = "auto"  # sampler's KV cache, one of KV_CACHES: "auto" = allocated once where the cache is plain layers
    decode_gemm: str = "auto"  # the lean decode step's few-row products, one of DECODE_GEMMS: "panels" (a kernel of our own, hybridpo.fast.panel_linear; for Llama-family models the block fused around it), "library" (MKL); "auto" = panels on the CPUs they were measured on (Intel with AVX-512, AMD's Zen 4 EPYCs and Zen 5; hybridpo.fast.kernels.measured_cpu) for fp32 Llama-family models of >= 100M parameters
    elementwise: str = "auto"  # a block's elementwise chains (RMSNorm, rotary, SwiGLU's backward) in the log-prob forwards, one of ELEMENTWISE: "compiled" (torch.compile's CPU backend), "eager"; "auto" = compiled for Llama-family models on CPU with an MLP width >= 1,024 and a C++ compiler
    span_kernel: str = "auto"  # what computes attention span by span in the log-prob forwards, one of SPAN_KERNELS: "ours" (a kernel of our own, csrc/span_attention.cpp), "flash" (torch's CPU flash kernel); "auto" = ours on the CPUs it was measured on (Intel with AVX-512, AMD's Zen 4 EPYCs and Zen 5) where the kernels build (heads off the 16-lane grid take flash)
    train_gemm: str = "auto"  # the log-prob forwards' and backwards' fp32 products, one of TRAIN_GEMMS: "onednn" (oneDNN inside torch, hybridpo.fast.onednn_gemm), "library" (MKL, torch's own); "auto" = oneDNN on the CPUs it was measured to pay on (AMD's Zen 4 EPYCs and Zen 5), MKL elsewhere
    sampler: str = "builtin"  # what draws online samples, one of SAMPLERS: "builtin" (hybridpo.rollout), "generate" (transformers' generate; docs/generation_engine.md)
    keep_freed_memory: str = "auto"  # glibc keeps freed CPU memory for reuse (set by the command line for the process): "auto" = on for CPU runs (~15% faster, ~1.5-2x resident memory), "on", "off"


@dataclass
class TrainConfig:
    method: str = ""  # training method, a key of hybridpo.methods.METHODS (sft, rm, dpo, ipo, ...); required
    model: ModelConfig = field(default_factory=ModelConfig)  # the model to train and its reference
    data: DataConfig = field(default_factory=DataConfig)  # the data layer's settings (hybridpo.data.DataConfig)
    method_args: MethodArgs | None = None  # the method's own options: resolved to METHODS[method].Config at load
    optim: OptimConfig = field(default_factory=OptimConfig)  # optimizer, schedule and batch
    run: RunConfig = field(default_factory=RunConfig)  # run folder, logging, checkpoints, precision
    speed: SpeedConfig = field(default_factory=SpeedConfig)  # layouts and speed tricks (same numbers, less time)


_CHOICES = {
    "model.dtype": DTYPES,
    "model.finetune": FINETUNE,
    "model.reference": REFERENCES,
    "optim.schedule": SCHEDULES,
    "run.mixed_precision": PRECISIONS,
    "speed.logprob_layout": LAYOUTS,
    "speed.share_prompt": SWITCHES,
    "speed.decoder": DECODERS,
    "speed.kv_cache": KV_CACHES,
    "speed.decode_gemm": DECODE_GEMMS,
    "speed.elementwise": ELEMENTWISE,
    "speed.span_kernel": SPAN_KERNELS,
    "speed.train_gemm": TRAIN_GEMMS,
    "speed.sampler": SAMPLERS,
    "speed.keep_freed_memory": SWITCHES,
}


# str settings whose values YAML reads as booleans when unquoted (`mixed_precision: no`)
_BOOLS_AS_TEXT = {"run.mixed_precision": {False: "no", True: "yes"}}


def load_config(path: str | Path | None, overrides: list[str] = ()) -> TrainConfig:
    """Read a YAML file (None: start from the defaults), apply `key=value` overrides, check every
    field; errors name the file (or "overrides") and the dotted key."""
    raw, where = read_yaml(path, overrides)
    return config_from_dict(raw, where=where)


def read_yaml(path: str | Path | None, overrides: list[str] = ()) -> tuple[dict, str]:
    """(the mapping a YAML file holds with `key=value` overrides applied, where it came from)."""
    where = str(path) if path is not None else "overrides"
    raw: dict = {}
    if path is not None:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of settings, got {type(raw).__name__}")
    for item in overrides:
        apply_override(raw, item, where=where)
    return raw, where


def apply_override(raw: dict, item: str, where: str = "overrides") -> None:
    """Set `a.b.c=value` in a nested dict; the value is parsed as YAML (1e-5 -> float, null -> None)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{where}: override {item!r} must look like key=value (e.g. optim.lr=1e-5)")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: override {item!r}: value is not valid YAML: {e}") from None
    parts = key.strip().split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{where}: override {item!r}: {'.'.join(parts[: i + 1])} is not a section")
        node = child
    node[parts[-1]] = value


def config_from_dict(raw: dict, where: str = "config") -> TrainConfig:
    """Build and check a TrainConfig from a plain mapping (YAML contents)."""
    from hybridpo.methods import METHODS  # late: methods import models' dependencies

    raw = dict(raw)
    data_raw = raw.pop("data", None) or {}
    method_raw = raw.pop("method_args", None) or {}
    cfg = build(TrainConfig, raw, where, prefix="")
    if not isinstance(data_raw, dict):
        raise ConfigError(f"{where}: data must be a mapping, got {data_raw!r}")
    try:
        cfg.data = DataConfig.from_dict(data_raw)
    except (DataError, TypeError, ValueError) as e:
        raise ConfigError(f"{where}: data: {e}") from None
    if not cfg.method:
        raise ConfigError(f"{where}: method is required; choose from {sorted(METHODS)}")
    if cfg.method not in METHODS:
        raise ConfigError(f"{where}: method={cfg.method!r}; choose from {sorted(METHODS)}")
    if not isinstance(method_raw, dict):
        raise ConfigError(f"{where}: method_args must be a mapping, got {method_raw!r}")
    cfg.method_args = build(METHODS[cfg.method].Config, method_raw, where, prefix="method_args.")
    _check(cfg, where)
    return cfg


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    """Write the resolved config (every default filled in) as YAML; load_config reads it back."""
    Path(path).write_text(yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False))


def _check(cfg: TrainConfig, where: str) -> None:
    for key, choices in _CHOICES.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value not in choices:
            raise ConfigError(f"{where}: {key}={value!r}; choose from {list(choices)}")
    if not cfg.model.name_or_path:
        raise ConfigError(f"{where}: model.name_or_path is required (a hub name or a local folder)")
    if not cfg.data.source:
        raise ConfigError(f"{where}: data.source (or data.recipe) is required")
    positive = {
        "optim.lr": cfg.optim.lr,
        "optim.batch_size": cfg.optim.batch_size,
        "optim.grad_accum": cfg.optim.grad_accum,
        "run.log_every": cfg.run.log_every,
        "run.keep_checkpoints": cfg.run.keep_checkpoints,
    }
    for key, value in positive.items():
        if not value > 0:
            raise ConfigError(f"{where}: {key}={value}; must be > 0")
    for key in ("optim.max_steps", "run.eval_every", "run.save_every", "run.eval_examples", "optim.warmup_steps",
                "run.eval_kl_samples"):
        section, name = key.split(".")
        if getattr(getattr(cfg, section), name) < 0:
            raise ConfigError(f"{where}: {key} must be >= 0")
    if cfg.optim.max_steps == 0 and not cfg.optim.epochs > 0:
        raise ConfigError(f"{where}: set optim.max_steps > 0 or optim.epochs > 0")
    if not 0.0 <= cfg.optim.warmup_ratio < 1.0:
        raise ConfigError(f"{where}: optim.warmup_ratio={cfg.optim.warmup_ratio}; must be in [0, 1)")
    if len(cfg.optim.adam_betas) != 2:
        raise ConfigError(f"{where}: optim.adam_betas must be two numbers, got {cfg.optim.adam_betas}")
    if cfg.model.finetune == "last_n_layers" and cfg.model.last_n_layers < 1:
        raise ConfigError(f"{where}: model.last_n_layers must be >= 1")
    valid_refs = {"full": ("copy",), "lora": ("copy", "disabled_adapter"), "last_n_layers": ("copy", "frozen_trunk")}
    ref, ft = cfg.model.reference, cfg.model.finetune
    if ref != "auto" and ref not in valid_refs[ft]:
        raise ConfigError(
            f"{where}: model.reference={ref!r} does not work with model.finetune={ft!r}; "
            f"choose from {['auto', *valid_refs[ft]]}"
        )


def build(cls, raw: dict, where: str, prefix: str = ""):
    """Instantiate dataclass `cls` from `raw`, checking names and types recursively; a ValueError
    of a dataclass's own checks (its `__post_init__`) becomes a ConfigError naming the key."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'config'} must be a mapping, got {raw!r}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {[prefix + u for u in unknown]}; valid: {sorted(prefix + k for k in known)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in raw.items():
        kwargs[name] = _convert(value, hints[name], where, prefix + name)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {prefix}{e}" if prefix else f"{where}: {e}") from None


def _convert(value, tp, where: str, key: str):
    """Check `value` against type hint `tp` (bool/int/float/str, lists, unions, dataclasses)."""
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value or {}, where, prefix=key + ".")
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for option in typing.get_args(tp):
            try:
                return _convert(value, option, where, key)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"{where}: {key} must be {_name(tp)}, got {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: {key} must be a list ({_name(tp)}), got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_convert(v, item_tp, where, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {key} must be a mapping, got {value!r}")
        return value
    if tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # PyYAML (YAML 1.1) reads 3e-6 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, bool) and key in _BOOLS_AS_TEXT:  # YAML 1.1 reads an unquoted `no` as false
            return _BOOLS_AS_TEXT[key][value]
    else:
        return value
    raise ConfigError(f"{where}: {key} must be {_name(tp)}, got {value!r}")


def _name(tp) -> str:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(_name(t) for t in typing.get_args(tp))
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))
