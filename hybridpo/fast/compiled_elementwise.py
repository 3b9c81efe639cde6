"""A Llama block's elementwise work as compiled kernels: one pass over memory where eager takes 4-10.

Between its matmuls a Llama-family block (Llama, Qwen2, Mistral) runs a chain of elementwise
operations, each a separate pass over (N, d) or (N, f) memory: RMSNorm (pow, mean, add, rsqrt,
two products; its backward ~8 passes), rotary (neg, cat, two products and a sum, for q and for k)
and SwiGLU's silu(g) * u (its backward ~10 passes). On SmolLM2-135M with 8 UltraFeedback pairs
(3,404 positions, 2 threads) everything but the matmuls and attention took 3.4 s of an 18 s DPO
step, most of it these chains (timed op by op, docs/bench/smollm2/op_breakdown.md). Each chain here is
written once as the eager formula and compiled with torch.compile (inductor's C++ backend: one
vectorised loop per chain, dynamic shapes, so one kernel serves every batch length), and called
inside an autograd function whose backward is a compiled chain too:

    RMSNorm     y = γ · x / sqrt(mean(x²) + ε)          keeps x and 1/sqrt(mean(x²) + ε) (N, 1)
                dx = r (γg − y · mean(γg · y)),  dγ = Σ_rows g · y
    rotary      q' = q cos + rotate_half(q) sin (and k)  keeps nothing but cos, sin
                dq = g cos + rotate_halfᵀ(g sin),  rotate_halfᵀ(z) = (z₂, −z₁)
    SwiGLU      h = silu(g) · u, eager (two passes; compiled it was no faster)   (fused_mlp keeps g, u)
                dg = dh · u · σ(g)(1 + g(1 − σ(g))),  du = dh · silu(g), and h again for dW

The values are the eager formulas' to float rounding (the compiled loop sums mean(x²) in its own
order): tests/fast/test_compiled_elementwise.py checks values and gradients against the modules'
own forward at 1e-5 (fp32).

How it reaches the model: `compiled_blocks(model)` swaps, for one forward, the forward of every
RMSNorm module (instance attribute, removed after) and the modelling module's
`apply_rotary_pos_emb` (the function the attention layers call by name; transformers itself offers
it for kernel replacement, `use_kernelized_func`); hybridpo.fast.fused_mlp's `fused_mlps(model,
compiled=True)` runs the compiled SwiGLU backward. Only where the C++ compiler inductor needs is present (`unsupported_reason`).
Compiling costs ~15 s in a fresh process with an empty cache and ~3 s with inductor's on-disk cache
(/tmp/torchinductor_<user>), once per process. Measured: the DPO step 15.29 -> 13.82 s, HyPO's
24.43 -> 22.29 s over an epoch (docs/bench/history.md).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import shutil
import types

import torch
from torch import Tensor

MODEL_TYPES = ("llama", "qwen2", "mistral")
NORM_CLASSES = ("LlamaRMSNorm", "Qwen2RMSNorm", "MistralRMSNorm")
MODELLING = {t: f"transformers.models.{t}.modeling_{t}" for t in MODEL_TYPES}

MIN_WIDTH = 1024  # the `auto` rule's MLP width f (hybridpo/fast/__init__.py: SmolLM2's 1,536 pays, the tests' <= 256 would not)


def unsupported_reason(model) -> str | None:
    """None when the compiled chains can serve `model`'s forward; otherwise why not."""
    from hybridpo.forward import hf

    inner = hf.unwrap_model(model)
    model_type = getattr(getattr(inner, "config", None), "model_type", None)
    if model_type not in MODEL_TYPES:
        return f"{type(inner).__name__} is not a Llama-family model ({', '.join(MODEL_TYPES)})"
    if hf.device_of(model).type != "cpu":
        return "measured on CPU only"
    if compiler_missing() is not None:
        return compiler_missing()
    return None


@functools.cache
def compiler_missing() -> str | None:
    """Why inductor's C++ backend cannot run here, or None."""
    if not any(shutil.which(cc) for cc in ("g++", "c++", "clang++")):
        return "no C++ compiler on PATH (inductor's CPU backend needs one)"
    try:
        importlib.import_module("torch._inductor")
    except Exception as error:  # noqa: BLE001 - any import failure means no compiler path
        return f"torch._inductor does not import: {error}"
    return None


def wide_enough(model) -> bool:
    """The `auto` rule's size test: the MLP width f at least MIN_WIDTH."""
    from hybridpo.forward import hf

    config = getattr(hf.unwrap_model(model), "config", None)
    return (getattr(config, "intermediate_size", 0) or 0) >= MIN_WIDTH


# --- the chains, written as the eager formulas, compiled on first use --------------------------


def _compiled(fn):
    """`fn` compiled on first use, called on detached tensors (requires_grad would be one more
    guard: the autograd functions below do the differentiation). Not fullgraph: past dynamo's
    recompile limit (each dtype, eps, layout or size-1 dimension is a compiled variant) a chain
    runs eagerly, with dynamo's warning: the same numbers, the eager speed, never an error."""

    @functools.cache
    def compiled():
        chain = torch.compile(fn, dynamic=True)
        return lambda *args: chain(*(a.detach() if isinstance(a, Tensor) else a for a in args))

    return compiled


def _rms_forward(x: Tensor, weight: Tensor, eps: float):
    r = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return weight * (x * r), r


def _rms_backward(grad: Tensor, x: Tensor, weight: Tensor, r: Tensor):
    y = x * r
    gy = grad * weight
    dx = r * (gy - y * (gy * y).mean(-1, keepdim=True))
    dw = (grad * y).reshape(-1, y.shape[-1]).sum(0)
    return dx, dw


def _rotate_half(x: Tensor) -> Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def _rotate_half_t(z: Tensor) -> Tensor:  # the transpose of rotate_half: (z₁, z₂) -> (z₂, −z₁)
    half = z.shape[-1] // 2
    return torch.cat([z[..., half:], -z[..., :half]], dim=-1)


def _rotary_forward(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor):
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


def _rotary_backward(dq: Tensor, dk: Tensor, cos: Tensor, sin: Tensor):
    return dq * cos + _rotate_half_t(dq * sin), dk * cos + _rotate_half_t(dk * sin)


def _swiglu_backward(d_h: Tensor, gate: Tensor, up: Tensor):
    sig = torch.sigmoid(gate)
    silu = gate * sig
    return d_h * up * sig * (1 + gate * (1 - sig)), d_h * silu, silu * up


rms_forward = _compiled(_rms_forward)
rms_backward = _compiled(_rms_backward)
rotary_forward = _compiled(_rotary_forward)
rotary_backward = _compiled(_rotary_backward)
swiglu_backward = _compiled(_swiglu_backward)


# --- autograd functions ------------------------------------------------------------------------


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        y, r = rms_forward()(x, weight, eps)
        ctx.save_for_backward(x, weight, r)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, weight, r = ctx.saved_tensors
        dx, dw = rms_backward()(grad.contiguous(), x, weight, r)
        return dx, (dw if ctx.needs_input_grad[1] else None), None


class _Rotary(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, cos, sin):
        ctx.save_for_backward(cos, sin)
        return rotary_forward()(q, k, cos, sin)

    @staticmethod
    def backward(ctx, dq, dk):
        cos, sin = ctx.saved_tensors
        # contiguous: the incoming gradients' layouts vary (each a recompile otherwise)
        dq = torch.zeros_like(dq) if dq is None else dq.contiguous()
        dk = torch.zeros_like(dk) if dk is None else dk.contiguous()
        return (*rotary_backward()(dq, dk, cos, sin), None, None)


def _norm_forward(self, hidden_states: Tensor) -> Tensor:
    weight, eps = self.weight, self.variance_epsilon
    if hidden_states.dtype != weight.dtype or weight.dtype not in (torch.float32, torch.float64):
        return type(self).forward(self, hidden_states)  # the module's casts (half precision): its own forward
    if torch.is_grad_enabled() and (hidden_states.requires_grad or weight.requires_grad):
        return _RMSNorm.apply(hidden_states, weight, float(eps))
    return rms_forward()(hidden_states, weight, float(eps))[0]


def apply_rotary_pos_emb(q: Tensor, k: Tensor, cos: Tensor, sin: Tensor, unsqueeze_dim: int = 1):
    """transformers' apply_rotary_pos_emb (same signature, same values) as one compiled chain."""
    cos, sin = cos.unsqueeze(unsqueeze_dim), sin.unsqueeze(unsqueeze_dim)
    if cos.requires_grad or sin.requires_grad or q.dtype != cos.dtype or cos.shape[-1] != q.shape[-1]:
        return _rotary_forward(q, k, cos, sin)  # eager
    if torch.is_grad_enabled() and (q.requires_grad or k.requires_grad):
        return _Rotary.apply(q, k, cos, sin)
    return rotary_forward()(q, k, cos, sin)


@contextlib.contextmanager
def compiled_blocks(model):
    """Within: `model`'s RMSNorms and rotary run as compiled chains (SwiGLU's backward: `fused_mlps(compiled=True)`)."""
    from hybridpo.forward import hf

    inner = hf.unwrap_model(model)
    modelling = importlib.import_module(MODELLING[inner.config.model_type])
    swapped = []
    original = modelling.apply_rotary_pos_emb
    try:
        for module in model.modules():
            if type(module).__name__ in NORM_CLASSES and "forward" not in module.__dict__ and not _hooked(module):
                module.forward = types.MethodType(_norm_forward, module)
                swapped.append(module)
        modelling.apply_rotary_pos_emb = apply_rotary_pos_emb
        yield
    finally:
        modelling.apply_rotary_pos_emb = original
        for module in swapped:
            del module.forward


def _hooked(module) -> bool:
    from hybridpo.fast.fused_head import has_hooks

    return has_hooks(module)
