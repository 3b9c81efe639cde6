"""The log-prob forwards' and backwards' fp32 products on oneDNN instead of MKL.

Why (SmolLM2-135M's shapes, 4,096 positions, 2 threads, an AMD EPYC of family 26, Zen 5;
docs/bench/amd/matmul_paths.md): torch's CPU build runs fp32 products on MKL, whose path on AMD
CPUs reached 180-190 GFLOP/s, while oneDNN (shipped inside torch, `torch.ops.mkldnn`), which
dispatches on the instruction set rather than on the vendor, reached 380-430 GFLOP/s for the
forward's x Wᵀ and the backward's dY W, and ~300 GFLOP/s for dWᵀ = Xᵀ dY on strided views (no
copy). On Intel CPUs MKL already runs at the machine's rate, and oneDNN was not measured there.

Four products, each falling back to torch where oneDNN does not serve (not fp32, not on the CPU,
or oneDNN absent), and each the same product up to fp32 rounding:

    linear(x, W, b)      = x Wᵀ + b        (oneDNN's linear)
    mm(a, b)             = a b             (linear with b's transposed view as the weight)
    mm_tn(a, b)          = aᵀ b = (bᵀ a)ᵀ  (linear on the two transposed views; the (K, N) result transposed back)
    add_mm_tn(acc, a, b) : acc += aᵀ b     (linear(aᵀ, bᵀ), N x K as it comes, added in place)

mm_tn is the body's dW (a Linear's, summed over all U positions at once); add_mm_tn is the LM head's
dW, summed block by block over hybridpo.fast.fused_head's blocks of a few hundred positions into a
(V, d) = (49,152, 576) gradient, where the (N, K) orientation ran faster (199-258 GFLOP/s against
MKL's in-place addmm at 160-165 and mm_tn's at 133-172; docs/bench/amd/head_dw.md).

How it reaches the model: `gemms(model)` swaps, for one forward, the forward of every plain
nn.Linear module (an instance attribute, removed after) for one whose autograd function runs its
forward and its backward's two products here; hybridpo.fast.fused_mlp's down projection and
hybridpo.fast.fused_head's logits, d hidden and dW call these products while the scope is on. A
backward runs after its scope has ended, so each autograd function records at its forward whether
oneDNN was on.

oneDNN keeps every primitive it has built, one per product shape, up to 1,024 of them (and torch's
ideep layer a cache of its own); a packed batch's row count is new nearly every step, so each step
adds ~12 (SmolLM2 DPO) and resident memory grew without bound: 4.4 -> 9.1 GB over 20 steps of new
lengths, still climbing, against 4.6 -> 6.2 GB, flat from step 17, with both caches at 64 and the
step no slower (9.8 vs 10.5 s; docs/bench/amd/primitive_cache.md). Importing this module sets both capacities to
PRIMITIVE_CACHE unless the environment already names them: oneDNN reads them once, when the process
builds its first primitive, which may come before any `gemms` (the bench's peak measurement's).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os

import torch
from torch import Tensor

_ON = contextvars.ContextVar("hybridpo_onednn_gemm", default=False)
PRIMITIVE_CACHE = 64  # primitives oneDNN (and ideep) keep: ~12 shapes a DPO step, so a few steps' worth
_CACHE_VARIABLES = ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")  # oneDNN's, torch's ideep's


def bound_primitive_cache() -> None:
    """Cap oneDNN's and ideep's primitive caches at PRIMITIVE_CACHE where the environment does not
    set them; takes effect only before the process builds its first oneDNN primitive."""
    for name in _CACHE_VARIABLES:
        os.environ.setdefault(name, str(PRIMITIVE_CACHE))


bound_primitive_cache()  # at import: before this process's first oneDNN primitive, wherever it is built


def unsupported_reason() -> str | None:
    """None where oneDNN's linear is in this torch build; otherwise why not."""
    if not torch.backends.mkldnn.is_available():
        return "this torch was built without oneDNN (torch.backends.mkldnn)"
    if not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return "this torch has no torch.ops.mkldnn._linear_pointwise"
    return None


# the AMD CPUs "auto" takes oneDNN's products on, where they were measured against MKL's on a
# SmolLM2 DPO batch's model work (docs/bench/*/train_gemm_paired.md), as (family, first model, last
# model, generation): the EPYCs of Zen 4 (family 25, models 0x10-0x1F; one of model 17: x Wᵀ and
# dY W 1.1-1.6x MKL's GFLOP/s, the batch 21.05 -> 20.02 s, docs/bench/zen4/) and Zen 5 (family 26;
# an EPYC: 2x MKL's rate, docs/bench/amd/). On Zen 3 MKL was as fast or faster (docs/bench/zen3/
# matmul_paths.md); on Intel MKL runs at the machine's rate and oneDNN was not measured.
MEASURED_AMD = ((25, 0x10, 0x1F, "Zen 4"), (26, 0x00, 0xFF, "Zen 5"))


def pays_here(model) -> str | None:
    """None where "auto" takes oneDNN (the measured case: an AMD CPU of MEASURED_AMD, fp32 weights
    on the CPU); otherwise why not."""
    from hybridpo.fast import kernels

    why = kernels.measured_amd(MEASURED_AMD, "oneDNN's training products")
    if why is not None:
        return why
    weight = next(model.parameters())
    if weight.device.type != "cpu" or weight.dtype != torch.float32:
        return f"weights are {weight.dtype} on {weight.device.type}, not fp32 on the CPU"
    return None


def on() -> bool:
    """Whether the products below run on oneDNN here (inside `gemms`)."""
    return _ON.get()


def _serves(*tensors: Tensor) -> bool:
    return all(t.dtype == torch.float32 and t.device.type == "cpu" for t in tensors)


def _use(onednn: bool | None, *operands: Tensor) -> bool:
    """Whether a product of `operands` runs on oneDNN: asked (`onednn`, default `on()`) and served."""
    return (on() if onednn is None else onednn) and _serves(*operands)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, onednn: bool | None = None) -> Tensor:
    """x Wᵀ + b for x (..., K), W (N, K); on oneDNN where `onednn` (default: `on()`) and it serves."""
    if _use(onednn, x, weight):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return torch.nn.functional.linear(x, weight, bias)


def mm(a: Tensor, b: Tensor, onednn: bool | None = None) -> Tensor:
    """a b for a (..., N), b (N, K)."""
    if _use(onednn, a, b):
        return torch.ops.mkldnn._linear_pointwise(a, b.t(), None, "none", [], "")
    return a @ b


def mm_tn(a: Tensor, b: Tensor, onednn: bool | None = None) -> Tensor:
    """aᵀ b for a (M, N), b (M, K): (N, K), contiguous (a weight's gradient)."""
    if _use(onednn, a, b):
        return torch.ops.mkldnn._linear_pointwise(b.t(), a.t(), None, "none", [], "").t().contiguous()
    return a.t() @ b


def add_mm_tn(acc: Tensor, a: Tensor, b: Tensor, onednn: bool | None = None) -> Tensor:
    """acc += aᵀ b in place for a (M, N), b (M, K), acc (N, K); returns acc."""
    if _use(onednn, acc, a, b):
        return acc.add_(torch.ops.mkldnn._linear_pointwise(a.t(), b.t(), None, "none", [], ""))
    return acc.addmm_(a.t(), b)


class _Linear(torch.autograd.Function):
    """x Wᵀ + b with its backward's dX = dY W and dW = dYᵀ X on oneDNN."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return linear(x, weight, bias, onednn=True)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad2 = grad.reshape(-1, grad.shape[-1])
        d_x = mm(grad, weight, onednn=True) if ctx.needs_input_grad[0] else None
        d_weight = mm_tn(grad2, x.reshape(-1, x.shape[-1]), onednn=True) if ctx.needs_input_grad[1] else None
        d_bias = grad2.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return d_x, d_weight, d_bias


def _forward(self: torch.nn.Linear, x: Tensor) -> Tensor:
    if torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad
                                    or (self.bias is not None and self.bias.requires_grad)):
        return _Linear.apply(x, self.weight, self.bias)
    return linear(x, self.weight, self.bias, onednn=True)


@contextlib.contextmanager
def gemms(model):
    """Within: `model`'s plain fp32 CPU nn.Linear modules, fused_mlp's down projection and
    fused_head's products run on oneDNN (their backwards too, whenever they run). A swapped module
    is still called as a module, so its hooks still run."""
    swapped = []
    token = _ON.set(True)
    try:
        for module in model.modules():
            if type(module) is torch.nn.Linear and "forward" not in module.__dict__ and _serves(module.weight):
                module.forward = functools.partial(_forward, module)
                swapped.append(module)
        yield
    finally:
        _ON.reset(token)
        for module in swapped:
            del module.forward
