"""A gated MLP (SwiGLU: down(silu(gate(x)) * up(x))) whose backward keeps two tensors, not four.

In a Llama-family block the MLP holds most of what the backward keeps: silu's input (the gate's
output), silu's output, the up projection's output (both for the product) and the product (for
the down projection's weight gradient): 4 x the MLP width f per position, 6,144 floats on
SmolLM2-135M (f = 1,536) of ~17 widths d = 576 a block keeps per position with per-span attention.
Here the activation, the product and the down projection are one autograd function that keeps
the gate's and the up projection's outputs and recomputes silu(g) * u in the backward (three
elementwise passes over (N, f), against the matmuls' 3 x 2 d f FLOPs per position): 2 f per
position, a third less activation memory per block. The forward is the module's own operations
in the same order (same values); the gradients are the same to float rounding
(tests/fast/test_fused_mlp.py).

`fused_mlps(model)` swaps the forward of every such MLP module of the model for the duration of a
forward (instance attributes, removed after), only where grad is on: a no-grad forward (the
reference, the sampler) runs the module as it is.
"""

from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from hybridpo.fast import compiled_elementwise, onednn_gemm
from hybridpo.fast.fused_head import has_hooks

MLP_CLASSES = ("LlamaMLP", "Qwen2MLP", "MistralMLP")


def unsupported_reason(model) -> str | None:
    from hybridpo.forward import hf

    mlps = list(_mlps(model))
    if not mlps:
        return "no Llama-family SwiGLU MLP with plain nn.Linear projections and silu"
    if hf.device_of(model).type != "cpu":
        return "measured on CPU only"
    return None


def _mlps(model):
    for module in model.modules():
        if type(module).__name__ not in MLP_CLASSES:
            continue
        lins = (getattr(module, n, None) for n in ("gate_proj", "up_proj", "down_proj"))
        act = getattr(module, "act_fn", None)
        if (all(type(lin) is torch.nn.Linear for lin in lins) and type(act).__name__ in ("SiLU", "SiLUActivation")
                and not has_hooks(module.down_proj) and not has_hooks(act)):  # both are bypassed here
            yield module


@contextlib.contextmanager
def fused_mlps(model, compiled: bool = False):
    """Within: every SwiGLU MLP of `model` keeps only its gate and up outputs for the backward;
    with `compiled`, its backward's elementwise chain is hybridpo.fast.compiled_elementwise's."""
    swapped = []
    try:
        for module in _mlps(model):
            if "forward" not in module.__dict__:
                module.forward = functools.partial(_forward, module, compiled=compiled)
                swapped.append(module)
        yield
    finally:
        for module in swapped:
            del module.forward


def _forward(self, x: Tensor, compiled: bool = False) -> Tensor:
    gate, up = self.gate_proj(x), self.up_proj(x)
    down = self.down_proj
    if torch.is_grad_enabled() and any(t.requires_grad for t in (gate, up, down.weight)):
        compiled = compiled and gate.dtype in (torch.float32, torch.float64)  # measured in fp32 (float64: the tests)
        return _SwiGLUDown.apply(gate, up, down.weight, down.bias, compiled)
    return down(F.silu(gate) * up)


class _SwiGLUDown(torch.autograd.Function):
    """down(silu(gate) * up); with `compiled`, the backward's elementwise chain is
    hybridpo.fast.compiled_elementwise's (the forward's silu(g) * u stays eager: two passes, and
    the compiled loop was no faster, 3.7 vs 3.4 ms at (3,404, 1,536))."""

    @staticmethod
    def forward(ctx, gate, up, weight, bias, compiled):
        ctx.save_for_backward(gate, up, weight, bias)
        ctx.compiled = compiled
        ctx.onednn = onednn_gemm.on()  # the backward runs after the scope (hybridpo.fast.onednn_gemm)
        return onednn_gemm.linear(F.silu(gate) * up, weight, bias, onednn=ctx.onednn)

    @staticmethod
    def backward(ctx, grad):
        gate, up, weight, bias = ctx.saved_tensors
        d_h = onednn_gemm.mm(grad, weight, onednn=ctx.onednn)  # (..., f)
        d_weight = d_bias = None
        if ctx.compiled:
            d_gate, d_up, h = compiled_elementwise.swiglu_backward()(d_h, gate, up)
        else:
            sig = torch.sigmoid(gate)
            silu = gate * sig
            h = silu * up if ctx.needs_input_grad[2] else None
            d_up = d_h * silu
            d_gate = d_h.mul_(up).mul_(sig.mul_(1 + gate * (1 - sig)))  # d silu / dg = σ (1 + g (1 - σ)); sig reused
        if ctx.needs_input_grad[2]:
            d_weight = onednn_gemm.mm_tn(grad.reshape(-1, grad.shape[-1]), h.reshape(-1, h.shape[-1]), onednn=ctx.onednn)
        del h
        if bias is not None and ctx.needs_input_grad[3]:
            d_bias = grad.reshape(-1, grad.shape[-1]).sum(0)
        return d_gate, d_up, d_weight, d_bias, None
