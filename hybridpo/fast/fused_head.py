"""The LM head and the target token's log-prob in one function, a block of positions at a time.

Only log softmax(h Wᵀ / τ)[target] is read at each scored position, yet the plain path
(hybridpo.forward.logprobs.log_softmax_at after the model's head) holds the (U, V) logits, the
logsumexp's backward keeps them and builds softmax, its gradient and the gather's full-size
gradient (U x V each): on SmolLM2-135M's 49,152-row head at a DPO batch (U = 2,350 positions)
that is ~1.7 GB of a step's peak for 0.5 GB of logits (docs/families/README.md). Here, for every
block of `rows` positions:

    forward    logits = h Wᵀ (+ b), / τ; logsumexp per row; the target logits gathered
    backward   p = softmax (from the kept logits block, or recomputed), dL/dlogits = (onehot·g - p·Σg) / τ,
               then dL/dh = (dL/dlogits) W and dL/dW += (dL/dlogits)ᵀ h for that block alone

so at most one (U, V) fp32 buffer lives (the kept logits, freed block by block in the backward;
`recompute=True` keeps none and runs the head's product once more in the backward: +1/3 of the
head's work), and a forward without grad (the reference) holds one block. Same numbers as the
plain path to float rounding (tests/fast/test_fused_head.py, values and gradients).

The softmax over the vocabulary, the forward's logsumexp and the backward's exp(logits - lse)·(-Σg),
runs on a kernel of our own (csrc/head_softmax.cpp, one pass per row, e^x by AVX-512 polynomial;
csrc/avx2/head_softmax_avx2.cpp, the same in 8 lanes, where the AVX-512 form does not load)
where `softmax_kernel_pays()`: torch's logsumexp makes (logits - max) and its exp as full-size
temporaries at ~1.5 G e^x a second, the backward's three in-place passes likewise. On a 341 x
49,152 block (2 threads, AMD EPYC Zen 5; docs/bench/amd/head_softmax.md) the logsumexp took 13.4
-> 2.3 ms, the backward's passes 10.4 -> 2.4 ms, a SmolLM2 DPO batch's model work 11.02 -> 10.47 s
(the two alternated in one process); the AVX2 form on Zen 3 (docs/bench/zen3/head_softmax.md)
28.4 -> 6.9 ms and 24.0 -> 4.6 ms, a DPO batch 23.36 -> 22.74 s; elsewhere, and for float64
models, torch's ops run.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from hybridpo.fast import kernels, onednn_gemm

BLOCK_BYTES = 64 << 20  # one block of fp32 logits: 64 MB (341 rows of a 49,152-token vocabulary)


def unsupported_reason(model) -> str | None:
    """None when `model`'s logits are exactly its decoder's hidden states times a plain Linear head."""
    from hybridpo.forward import hf

    inner = hf.unwrap_model(model)
    if inner is not hf.base_model(model):
        return f"{type(model).__name__}'s forward would be bypassed"
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if type(head) is not torch.nn.Linear:
        return f"the output head is {type(head).__name__}, not a plain nn.Linear"
    if has_hooks(head):
        return "the output head has forward hooks (the fused path would skip them)"
    for name in hf.HEAD_EXTRAS:
        if getattr(inner.config, name, None) not in (None, 1.0):
            return f"config.{name} transforms logits beyond the output embedding"
    if getattr(inner, getattr(inner, "base_model_prefix", ""), None) is None:
        return f"{type(inner).__name__} has no `{inner.base_model_prefix}` decoder attribute"
    if hf.device_of(model).type != "cpu":
        return "measured on CPU only"
    return None


def has_hooks(module: torch.nn.Module) -> bool:
    """Forward (pre-)hooks on `module` or on every module: a path that uses its weight directly would skip them."""
    from torch.nn.modules import module as nn_module

    return bool(module._forward_hooks or module._forward_pre_hooks or nn_module._global_forward_hooks
                or nn_module._global_forward_pre_hooks)


def hidden_at(model, inputs: dict, needs_head: Tensor):
    """The decoder's final hidden states at the True positions of `needs_head` (R, T): ((U, d) in
    row-major order, the decoder's output, which holds the KV cache when `inputs` asks for one)."""
    from hybridpo.forward import hf

    inner = hf.base_model(model)
    out = getattr(inner, inner.base_model_prefix)(**inputs)
    return out.last_hidden_state[needs_head], out


def head_of(model) -> torch.nn.Linear:
    from hybridpo.forward import hf

    return hf.unwrap_model(model).get_output_embeddings()


@functools.cache
def softmax_kernel_pays() -> bool:
    """Whether the vocabulary softmax takes our kernel here: csrc/head_softmax.cpp on the CPUs where
    our AVX-512 kernels were measured (hybridpo.fast.kernels.measured_cpu("head")) and where they build;
    where they do not, csrc/avx2/head_softmax_avx2.cpp on the CPUs kernels.measured_avx2_cpu("head")
    allows, where it builds."""
    if kernels.load() is None:
        return kernels.measured_cpu("head") is None
    return kernels.measured_avx2_cpu("head") is None and kernels.load_avx2() is None


def target_logps(hidden: Tensor, head: torch.nn.Linear, rows: Tensor, targets: Tensor, temperature: float = 1.0,
                 recompute: bool = False, softmax_kernel: bool | None = None) -> Tensor:
    """log softmax(head(hidden) / τ)[rows, targets]: (U, d) hidden, (M,) rows and targets -> (M,) fp32
    (float64 for a float64 model). `softmax_kernel`: the vocabulary softmax on csrc/head_softmax.cpp
    (default: where softmax_kernel_pays; it serves fp32 CPU logits only, others take torch's ops)."""
    weight, bias = head.weight, head.bias
    kernel = softmax_kernel_pays() if softmax_kernel is None else bool(softmax_kernel)
    if kernel and kernels.load_either() is not None:  # the AVX-512 form, or the AVX2 one
        raise ValueError(f"softmax_kernel=True is not available: {kernels.load_either()}")
    kernel = kernel and _dtype(hidden) == torch.float32 and hidden.device.type == "cpu"
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (hidden, weight, bias)):
        return _TargetLogps.apply(hidden, weight, bias, rows, targets, float(temperature), bool(recompute), kernel)
    return _forward(hidden, weight, bias, rows, targets, float(temperature), keep=False, onednn=onednn_gemm.on(),
                    kernel=kernel)[0]


def _blocks(U: int, V: int):
    step = max(1, BLOCK_BYTES // (4 * V))
    return [(a, min(a + step, U)) for a in range(0, U, step)]


def _dtype(hidden: Tensor) -> torch.dtype:
    """The log-probs' dtype: fp32, or the model's when wider (a float64 model stays exact)."""
    return torch.promote_types(hidden.dtype, torch.float32)


def _logits(hidden: Tensor, weight: Tensor, bias: Tensor | None, temperature: float, onednn: bool) -> Tensor:
    logits = onednn_gemm.linear(hidden, weight, bias, onednn=onednn).to(_dtype(hidden))
    return logits if temperature == 1.0 else logits.div_(temperature)


def _lse(logits: Tensor, kernel: bool) -> Tensor:
    """logsumexp of each row of a block of logits."""
    if kernel and logits.is_contiguous():
        return kernels.either_ops().head_lse(logits)
    return logits.logsumexp(-1)


def _scaled_softmax_(logits: Tensor, lse: Tensor, scale: Tensor, kernel: bool) -> Tensor:
    """logits <- exp(logits - lse) * scale, each row by its own lse and scale, in place."""
    if kernel and logits.is_contiguous():
        return kernels.either_ops().head_scaled_softmax_(logits, lse.contiguous(), scale.contiguous())
    return logits.sub_(lse[:, None]).exp_().mul_(scale[:, None])


def _forward(hidden, weight, bias, rows, targets, temperature, keep: bool, onednn: bool, kernel: bool):
    """(target log-probs (M,), logsumexp per row (U,), the kept logits blocks or None)."""
    U, V = hidden.shape[0], weight.shape[0]
    lse = torch.empty(U, dtype=_dtype(hidden), device=hidden.device)
    target_logit = torch.empty(targets.shape[0], dtype=_dtype(hidden), device=hidden.device)
    kept = []
    for a, b in _blocks(U, V):
        logits = _logits(hidden[a:b], weight, bias, temperature, onednn)  # (n, V)
        lse[a:b] = _lse(logits, kernel)
        m = ((rows >= a) & (rows < b)).nonzero().squeeze(-1)  # the targets read from this block
        target_logit[m] = logits[rows[m] - a, targets[m]]
        kept.append(logits if keep else None)
    return target_logit - lse[rows], lse, kept


class _TargetLogps(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, rows, targets, temperature, recompute, kernel):
        ctx.onednn = onednn_gemm.on()  # the backward runs after the scope (hybridpo.fast.onednn_gemm)
        ctx.kernel = kernel
        out, lse, kept = _forward(hidden, weight, bias, rows, targets, temperature, keep=not recompute, onednn=ctx.onednn,
                                  kernel=kernel)
        ctx.save_for_backward(hidden, weight, bias, rows, targets, lse)
        ctx.kept, ctx.temperature = kept, temperature
        return out

    @staticmethod
    def backward(ctx, grad):
        hidden, weight, bias, rows, targets, lse = ctx.saved_tensors
        want_h, want_w, want_b = ctx.needs_input_grad[:3]
        U, V = hidden.shape[0], weight.shape[0]
        dtype = _dtype(hidden)
        grad = grad.to(dtype)
        row_grad = torch.zeros(U, dtype=dtype, device=grad.device).index_add_(0, rows, grad)  # Σ g per row
        d_hidden = torch.empty_like(hidden) if want_h else None
        d_weight = torch.zeros_like(weight, dtype=torch.promote_types(weight.dtype, hidden.dtype)) if want_w else None
        d_bias = torch.zeros(V, dtype=dtype, device=grad.device) if want_b else None
        for i, (a, b) in enumerate(_blocks(U, V)):
            logits = ctx.kept[i]
            ctx.kept[i] = None  # freed as the backward goes (a second backward, retain_graph=True, recomputes)
            if logits is None:
                logits = _logits(hidden[a:b], weight, bias, ctx.temperature, ctx.onednn)
            d_logits = _scaled_softmax_(logits, lse[a:b], -row_grad[a:b], ctx.kernel)  # -p Σg, in place
            m = ((rows >= a) & (rows < b)).nonzero().squeeze(-1)
            d_logits.index_put_((rows[m] - a, targets[m]), grad[m], accumulate=True)  # + onehot g
            if ctx.temperature != 1.0:
                d_logits.div_(ctx.temperature)
            d_logits = d_logits.to(hidden.dtype)
            if want_h:
                d_hidden[a:b] = onednn_gemm.mm(d_logits, weight, onednn=ctx.onednn)
            if want_w:
                onednn_gemm.add_mm_tn(d_weight, d_logits, hidden[a:b], onednn=ctx.onednn)
            if want_b:
                d_bias += d_logits.sum(0)
        return (d_hidden, None if d_weight is None else d_weight.to(weight.dtype),
                None if d_bias is None else d_bias.to(bias.dtype), None, None, None, None, None)
