"""The decode step's few-row products with a kernel of our own that streams each weight once
(csrc/panel_linear.cpp): residual + x Wᵀ + b for x of at most 16 rows; and, for the Llama family,
the rest of the block fused around those products (PanelLlamaDecoder).

Why (SmolLM2-135M-Instruct, 2 threads, an Intel Xeon with AVX-512; docs/bench/history.md): a
decode step with 16 samples reads all 538 MB of fp32 weights for 16 rows, so it is bound by how
fast the weights stream, not by FLOPs. MKL's packed product (neox_decode.PackedLinear) streamed
the step's 121 products at 13-15 GB/s, the 113 MB head alone at 15-22 GB/s: its small products (1.3-7
MB each) pay its per-call start. The kernel lays W (N, K) out as N / 16 panels of (K, 16), one
contiguous stream each. A task takes two panels and, over blocks of 128 inputs, keeps 8 rows x 32
outputs in 16 AVX-512 registers, then the next 8 rows over the same block from L1, prefetching
16 KB ahead, on torch's threads. (One panel with all 16 rows in registers needed a broadcast
load per FMA and ran a single thread at ~1 FMA a cycle on weights in L2, 11.9 GB/s; the pairs
run 16.9 GB/s there. Streaming from memory on 2 threads both are near 19-20 GB/s, and a decode
was 2% faster with pairs.)

With the products on the kernel, the rest of a Llama block (~14 small ops: two rms_norms, rotary,
the cache write, SDPA, silu and mul) was a third of the decode step: 0.8 of a 2.4 s decode, SDPA
0.30 s, rms_norm 0.16 s. PanelLlamaDecoder runs a block in five calls of the kernel's library
(rms_norm + q | k | v; rotary + the cache write + attention over the cache; o + residual;
rms_norm + gate | up + silu(gate) * up; down + residual).

Measured (docs/bench/smollm2/): the step's 121 products alone 40.8 -> 31.2 ms (13.2 -> 17.2 GB/s)
and a 53-token decode of 8 prompts x 2 samples 3.12 -> 2.60 s with the single-panel kernel
(decode_bandwidth.md); in a later run, 3.31 s with MKL, 2.79 s with the kernel's products alone,
2.19 s with the block fused (decode_bandwidth_fused.md). In a HyPO step of the smollm2-hypo
workload, "panels" and "library" alternated in one process: sampling 3.16 -> 2.23 s, the step's
model work 20.11 -> 19.24 s (decode_gemm_paired_fused.md). Two other forms of the product were
slower: W in its own (N, K) layout with row dot products (35.3 ms, as MKL: the horizontal sums
cost), and panels in memory mapped per call outside glibc's heap (the page faults added 0.07 s).

On an AMD EPYC (Zen 5, docs/bench/amd/decode_bandwidth.md) MKL's product is far slower: the 113 MB
head at 7.8 GB/s against the kernel's 23.5, the step's products 74.7 -> 26.2 ms, the decode 6.54 s
with MKL and 1.49 s with the block fused, so `auto` takes the kernel there too. There the kernel
takes a grid of more than 8 rows in one pass over each panel (`one_pass`): the decode 1.38 ->
1.07 s against the pairs (docs/bench/amd/panel_one_pass.md). On an EPYC of Zen 4 (AVX-512 on
256-bit units, docs/bench/zen4/decode_bandwidth.md) the same: the head 6.7 -> 20.3 GB/s, the
step's products 85.5 -> 26.3 ms, the decode 6.64 s with MKL and 1.79 s with the block fused.

On a CPU without AVX-512 (an AMD EPYC of the Zen 2 or Zen 3 generation, AVX2 only) the AVX-512
kernels do not build; there csrc/avx2/panel_avx2.cpp takes the products, in the same panels (one
panel a task, 6 rows x 16 outputs in 12 of AVX2's 16 registers over blocks of 128 inputs, then the
next rows from L1), and the block's same five calls. On Zen 2 (2 threads, a matmul peak of ~148
GFLOP/s), its products alone, before their accumulators were named (below): the head 6.4 -> 12.0
GB/s against MKL's packed product, the step's 121 products 86.2 -> 49.2 ms, a 53-token decode of 8
prompts x 2 samples 6.57 -> 4.12 s (docs/bench/zen2/decode_bandwidth.md). On an EPYC of Zen 3
(docs/bench/zen3/), the same decode: 8.13 s with MKL; 5.64 s with the products as they were, whose
12 accumulators GCC kept on the stack, stored on every input (that, not the FMA units, bound
them); 4.02 s with them named (the step's products 66.2 -> 37.7 ms); 3.20 s with the block fused.
HyPO's sampling over 7 timed steps of the smollm2-hypo workload went 41-43 -> 21-23 s. The fused
block on AVX2 was measured on Zen 3 only. `pays_here` takes the kernel on the CPUs
kernels.measured_avx2_cpu allows.

Same numbers as the library path to float rounding (each output is a sum over K in another
order; the softmax's exp is a polynomial within 2 ulp): tests/fast/test_panel_linear.py checks the
product at every row count, the fused norms and attention against float64, and the fused decode's
log-probs of replayed samples at 1e-5.

The kernel is built and loaded with the others of csrc/ by hybridpo.fast.kernels, its AVX2 form as
a library of its own; where neither can build (no compiler, no AVX2) it is unavailable, and
`unsupported_reason` says why.
"""

from __future__ import annotations

import torch
from torch import Tensor

from hybridpo.fast import kernels
from hybridpo.fast.llama_decode import MODEL_TYPES, LlamaDecoder
from hybridpo.fast.neox_decode import PackedLinear

ROWS = 16  # the most rows the kernel takes (M AVX-512 accumulators per panel)
WIDTH = 16  # outputs per panel
MIN_PARAMETERS = 100_000_000  # "auto" only for models this large (measured on SmolLM2-135M alone)


def unsupported_reason() -> str | None:
    """None when a form of the kernel is built and loaded here (AVX-512, else AVX2); otherwise why
    not."""
    avx512 = kernels.load()
    if avx512 is None:
        return None
    avx2 = kernels.load_avx2()
    return None if avx2 is None else f"{avx512}; the AVX2 form: {avx2}"


def _ops():
    """The loaded kernel's ops (the products, the pack, the fused block's calls): AVX-512's where it
    loads, else AVX2's."""
    return torch.ops.hybridpo_panel if kernels.load() is None else torch.ops.hybridpo_panel_avx2


def one_pass() -> bool:
    """Whether the kernel takes a grid of more than 8 rows in one pass over each panel (all rows in
    registers, one broadcast of x per FMA) rather than in two passes over pairs of panels; chosen
    by CPU vendor, as measured on each. AMD EPYC (Zen 5): one pass; the two alternated in one
    process, a decode step's 121 products at 16 rows 22.7 -> 16.4 ms, the 113 MB head 27.4 -> 40.9
    GB/s, a 53-token decode of 8 prompts x 2 samples 1.38 -> 1.07 s, a HyPO step's sampling 1.50 ->
    1.16 s (docs/bench/amd/panel_one_pass.md); on an EPYC of Zen 4 the same, the products 31.3 ->
    27.4 ms, the decode 2.05 -> 1.93 s, a HyPO step's sampling 2.00 -> 1.88 s
    (docs/bench/zen4/panel_one_pass.md). Intel Xeon: pairs (one pass held a thread to ~1 FMA a cycle
    on weights in L2, 11.9 against 16.9 GB/s; streaming, both ran 19-20 GB/s and a decode was 2%
    faster in pairs; docs/bench/history.md)."""
    return kernels.vendor() == "AuthenticAMD"


def pays_here(model) -> str | None:
    """None where "auto" takes the kernel (the measured case: a CPU kernels.measured_cpu allows for
    the AVX-512 form, or, where that form does not load, one kernels.measured_avx2_cpu allows for the
    AVX2 product; a Llama-family model of at least MIN_PARAMETERS in fp32); otherwise why not."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in MODEL_TYPES:
        return f"measured on Llama-family models only ({', '.join(MODEL_TYPES)}), this is {model_type}"
    why = kernels.measured_cpu("decode") if kernels.load() is None else kernels.measured_avx2_cpu("decode")  # the form that loads
    if why is not None:
        return why
    weight = next(model.parameters())
    if weight.device.type != "cpu" or weight.dtype != torch.float32:
        return f"weights are {weight.dtype} on {weight.device.type}, not fp32 on the CPU"
    parameters = sum(p.numel() for p in model.parameters())
    if parameters < MIN_PARAMETERS:
        return f"{parameters:,} parameters (< {MIN_PARAMETERS:,}): weights that stay in cache were not measured"
    return None


class PanelLinear(PackedLinear):
    """neox_decode.PackedLinear whose products of at most ROWS rows run the panel kernel; a grid of
    more rows, or a weight whose output count is not a multiple of 16 or that is not fp32 on the
    CPU, takes PackedLinear's path."""

    def __init__(self, weight: Tensor, bias: Tensor | None, rows: int, copy: bool = True):
        why = unsupported_reason()
        if why is not None:
            raise RuntimeError(f"PanelLinear: {why}")
        self.panels = None
        self.avx512 = kernels.load() is None  # the AVX-512 form, else the AVX2 one (a test may set it)
        self.one_pass = one_pass()  # the kernel's form for more than 8 rows (a bench may set it)
        super().__init__(weight, bias, rows, copy)

    def pack(self, rows: int) -> None:
        w = self.weight
        if rows <= ROWS and w.shape[0] % WIDTH == 0 and w.device.type == "cpu" and w.dtype == torch.float32:
            if self.panels is None:
                self.panels = to_panels(self.weight)
                self.bias = None if self.bias is None else self.bias.contiguous()
            self.rows, self.packed = rows, None
        else:
            self.panels = None
            super().pack(rows)

    def __call__(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        if self.panels is not None and x.shape[0] <= ROWS and x.is_contiguous() and (
                residual is None or residual.is_contiguous()):
            if self.avx512:
                return torch.ops.hybridpo_panel.linear(x, self.panels, self.bias, residual, self.one_pass)
            return torch.ops.hybridpo_panel_avx2.linear(x, self.panels, self.bias, residual)
        return super().__call__(x, residual)


class PanelLlamaDecoder(LlamaDecoder):
    """hybridpo.fast.llama_decode.LlamaDecoder on the panel kernel, its block fused into five calls
    where every product takes the kernel (a grid of at most ROWS rows, head size and MLP width
    multiples of 16 and 32): rms_norm + q | k | v; rotary + the cache write + attention over the
    cache (each query head reads its KV head's columns once, skipping those the bias hides); o + the
    residual; rms_norm + gate | up + silu(gate) * up; down + the residual. The head's call takes
    the final norm with its γ. Elsewhere (a grid of more rows) LlamaDecoder's step runs. The calls
    are the AVX-512 library's where it loads, else the AVX2 library's (one panel a task).

    Why: with the products on the kernel, the rest of the step was a third of it (SmolLM2-135M,
    8 prompts x 2 samples, 2 threads: 0.8 of a 2.4 s decode in ~14 ops per block, SDPA 0.30 s,
    rms_norm 0.16 s, silu and mul 0.10 s); measured in docs/bench/smollm2/decode_bandwidth.md. On
    an AMD EPYC of Zen 3 (AVX2) it was half the step, 37.5 of 77.4 ms
    (docs/bench/zen3/decode_bandwidth_registers.md)."""

    def __init__(self, model, rows: int, linear=None):
        super().__init__(model, rows, linear=linear or PanelLinear)
        self.avx512 = kernels.load() is None  # the fused calls' library: AVX-512's, else AVX2's
        self.fused = self._all_on_kernel()
        self.one_pass = one_pass()  # the AVX-512 kernel's form for more than 8 rows (a bench may set it)

    def repack(self, rows: int) -> None:
        super().repack(rows)
        self.fused = self._all_on_kernel()

    def _all_on_kernel(self) -> bool:
        blocks = [lin for lin in self._linears() if lin is not self.head]  # the head may take the library product
        return (self.head_dim % WIDTH == 0 and all(getattr(lin, "panels", None) is not None for lin in blocks)
                and all(f % (2 * WIDTH) == 0 for *_, f in self.layers))

    def step(self, tok: Tensor, positions: Tensor, caches: list[Tensor], bias: Tensor, width: int,
             rotations: Tensor) -> Tensor:
        if not self.fused:
            return super().step(tok, positions, caches, bias, width, rotations)
        # the AVX-512 calls take the product's form (one pass or pairs); AVX2's have one form
        ops, form = (torch.ops.hybridpo_panel, (self.one_pass,)) if self.avx512 else (torch.ops.hybridpo_panel_avx2, ())
        P, k = tok.shape
        x = self.embed[tok.reshape(-1)]  # (P*k, d)
        rotation = torch.view_as_real(rotations[positions]).contiguous()  # (P, R/2, 2): cos | sin
        for (_, _, qkv, o, up, down, _), (eps1, eps2), cache in zip(self.layers, self.eps, caches):
            fused = ops.norm_linear(x, eps1, None, qkv.panels, qkv.bias, *form)  # γ folded into W
            x = ops.linear(ops.attend(fused, rotation, cache, bias, width, self.heads), o.panels, o.bias, x, *form)
            x = ops.linear(ops.norm_glu(x, eps2, up.panels, up.bias, *form), down.panels, down.bias, x, *form)
        if getattr(self.head, "panels", None) is None:  # a vocabulary that is not whole panels of 16
            return self.head(self.final_norm(x)).view(P, k, -1)
        return ops.norm_linear(x, self.final_eps, self.final_gamma, self.head.panels, None, *form).view(P, k, -1)


def to_panels(weight: Tensor) -> Tensor:
    """W (N, K) laid out as (N / 16, K, 16) by the kernel's parallel pack (0.06 s for SmolLM2's
    538 MB of decode weights, against 0.10 s for MKL's packing)."""
    N, K = weight.shape
    return _ops().pack(weight.contiguous(), weight.new_empty((N // WIDTH, K, WIDTH)))
