"""Speed tricks, fenced off: nothing that reads against the paper depends on them.

Each is chosen by a setting whose `auto` rule is stated here and was measured; each has an
equivalence test beside it (the same tokens / log-probs / numbers as the plain path):

| trick | module | setting | auto rule (measured) |
|---|---|---|---|
| one prompt pass per step for the sampler and the loss | `prompt_rule` | `speed.share_prompt` (`Policy(share_prompt=)`) | "auto": share iff cost(prompt pass) + cost(responses after it) < cost(packed rows) + cost(prompt pass) / 3, costs = positions + a x attention scores per block from the lengths known before sampling (offline responses + k x max_new_tokens); with attention "spans" both layouts compute the same, so sharing pays; with "masked" rows, UltraFeedback's after-pass rows were 49% padding and sharing took 1.9x (docs/families/README.md) |
| lean decode step (weights folded and MKL-packed once per call; each prompt's cache read once for its k samples; GPT-NeoX and the Llama family) | `neox_decode`, `llama_decode` | `speed.decoder` (`sample(decoder=)`) | the family's lean step ("neox", "llama") on CPU for fp32 weights outside autocast: transformers' GPT-NeoX step took 45 ms at the TL;DR shape with 16 samples, 2 threads; packing the weights alone then took a 53-token decode from 2.20 to 1.88 s. Re-measured per decode step, 1 thread, CPU time (`docs/bench/decode_rule.py`), lean / transformers: GPT-NeoX 2 x 64 (the gold task's smallest, 64 samples x 8) 0.75, 4 x 128 0.88, Pythia-70m shape (16 x 53) 0.72; Llama 2 x 64 0.76, SmolLM2-135M (16 x 53) 0.90 (random weights; the real model 7.6 -> 5.9 s for the 53 tokens, near this machine's memory bandwidth for 0.54 GB of weights per step). The lean step is faster at every size, so the rule is not size-aware: the earlier reading of 0.067 vs 0.036 s per step on the 2 x 64 gold model was taken with 2 threads on a loaded 2-core machine, where each parallel region waits for a descheduled thread (the same script there gave 0.15 s per step at 2 threads against 0.002 s at 1). "transformers" elsewhere (never measured on a GPU, so never chosen there; under bf16 autocast the folded fp32 weights met bf16 activations and broke, so half precision, weights or autocast, decodes with transformers) |
| the lean decode step's few-row products streaming each weight once (a kernel of our own: W as 16-column panels, 8 rows x 2 panels of outputs in AVX-512 registers with 16 KB prefetched ahead on Intel, all rows over one panel in one pass with 8 KB prefetched on AMD (`panel_linear.one_pass`); compiled once per CPU with the C++ compiler), and for the Llama family the block fused around them in five calls (rms_norm + q/k/v, rotary + cache write + attention, o + residual, rms_norm + gate/up + silu * up, down + residual) | `panel_linear` | `speed.decode_gemm` (`sample(decode_gemm=)`) | "panels" on the CPUs `kernels.measured_cpu` allows (Intel with AVX-512F, AMD's Zen 4 EPYCs and Zen 5) for fp32 Llama-family models (Llama, Qwen2, Mistral) of >= 100M parameters where the kernel builds (SmolLM2-135M, 2 threads, Intel Xeon: the step's 121 products 40.8 -> 31.2 ms, 13.2 -> 17.2 GB/s of weights; a 53-token decode of 8 prompts x 2 samples 3.31 s (MKL) -> 2.79 s (the kernel's products) -> 2.19 s (the block fused); in a HyPO step, the two settings alternated in one process, sampling 3.16 -> 2.23 s, the step's model work 20.11 -> 19.24 s, docs/bench/smollm2/decode_gemm_paired_fused.md; AMD EPYC, Zen 4: the same decode 6.64 s (MKL) -> 1.79 s, docs/bench/zen4/decode_bandwidth.md; Zen 5: 6.54 s (MKL, 7.2 GB/s on the products) -> 1.49 s (the block fused), docs/bench/amd/decode_bandwidth.md; there one pass over each panel against pairs, alternated in one process: the products 22.7 -> 16.4 ms, the decode 1.38 -> 1.07 s, a HyPO step's sampling 1.50 -> 1.16 s, docs/bench/amd/panel_one_pass.md); where the AVX-512 kernels do not load, an AVX2 form of the kernel and the fused block (csrc/avx2/: one panel a task, 6 rows x 16 outputs in registers) on the CPUs `kernels.measured_avx2_cpu` allows (AMD's Zen 2, family 23 from model 0x30, its products alone: the step's 121 products 86.2 -> 49.2 ms, a 53-token decode 6.57 -> 4.12 s, docs/bench/zen2/decode_bandwidth.md; the EPYCs of Zen 3, family 25 models 0x00-0x0F: the products 96.1 -> 37.7 ms, the decode 8.13 -> 3.20 s with the block fused, docs/bench/zen3/decode_bandwidth_fused.md); "library" (MKL's packed product) elsewhere: AMD's Zen 1, other Zen 3 and Zen 4 models, Intel without AVX-512, GPT-NeoX, and models whose weights may stay in cache, were not measured ("panels" serves GPT-NeoX too, its products only, tested) |
| decode KV cache allocated once | `kv_cache` | `speed.kv_cache` (`sample(kv_cache=)`) | "preallocated" whenever the prefilled cache is plain layers (the dynamic cache's per-token copy was 43% of a TL;DR decode's CPU time); "dynamic" for other caches (sliding windows) |
| attention span by span on one unpadded row (groups back to back; prompts causal, each response over its prompt's keys and its own; GQA heads not repeated; the CPU flash kernel's forward and backward per span) | `varlen_attention` | `response_logps(attention=)`, `prompt_pass(attention=)` | "spans" for Llama / Qwen2 / Mistral (no sliding window) / GPT-NeoX models on CPU (SmolLM2-135M, 8 UltraFeedback pairs: the masked rows were 23% padding and one block's attention forward + backward took 202 ms against 105 ms span by span; the DPO step's policy forward + backward and reference forward 29.5 -> 19.8 s CPU, one thread; peak RSS 9.42 -> 8.75 GB); "masked" elsewhere (never measured on a GPU) |
| each span's attention, forward and backward, on a kernel of our own (a task per span and key / value head, its query heads together, 16 positions a block: scores against key panels, an exact softmax, the products 8 rows x 2 panels in AVX-512 registers; the backward recomputes the scores from the kept log-sum-exps; where the AVX-512 library does not load, the same in 8 lanes, 6 rows x one panel in AVX2 registers) | `varlen_attention` (csrc/span_attention.cpp, csrc/avx2/span_attention_avx2.cpp) | `speed.span_kernel` (`response_logps(span_kernel=)`, `prompt_pass(span_kernel=)`) | "ours" on the CPUs `kernels.measured_cpu` allows (Intel with AVX-512, AMD's Zen 4 EPYCs and Zen 5) for fp32 heads of a multiple of 16 where the kernels build (SmolLM2-135M's heads, 9 over 3 of 64, 2 threads, Intel Xeon: one causal span of 330 forward + backward 6.67 -> 3.21 ms, of 180 2.51 -> 1.26 ms, docs/bench/smollm2/span_kernel_one_span.md; a DPO batch's policy forward + reference forward + backward, the two alternated in one process, 16.73 -> 14.23 s, docs/bench/smollm2/span_kernel_paired.md; AMD EPYC, Zen 4: one span of 330 7.80 -> 3.60 ms, a DPO batch's model work alternated in one process 21.01 -> 19.96 s, docs/bench/zen4/; Zen 5: one span of 330 7.42 -> 1.90 ms, of 180 2.49 -> 0.67 ms, docs/bench/amd/span_kernel_one_span.md); the AVX2 form on the CPUs `kernels.measured_avx2_cpu("spans")` allows (the EPYCs of Zen 3, family 25 models 0x00-0x0F: one span of 330 8.68 -> 4.30 ms, of 180 2.99 -> 1.46 ms, docs/bench/zen3/span_kernel_one_span.md; a DPO batch's model work, alternated in one process, 25.16 -> 22.94 s, docs/bench/zen3/span_kernel_paired.md); "flash" (torch's CPU flash kernel) elsewhere: Zen 4's other models, Zen 2 and older and Intel without AVX-512 were not measured, and heads off the 16-lane grid, half precision or more than two key ranges a span take it call by call |
| the LM head and the target token's log-prob fused, a block of positions at a time (no (U, V) log-softmax, its gradient or softmax held) | `fused_head` | `response_logps(head=)` | "fused" where the logits are the decoder's hidden states times a plain nn.Linear head, on CPU (SmolLM2-135M, two DPO steps' forwards + backward, spans: peak RSS 8.75 -> 7.22 GB, time the same, 19.8 vs 19.6 s CPU, one thread); "plain" elsewhere (never measured on a GPU) |
| the fused head's softmax over the vocabulary (the forward's logsumexp, the backward's exp(logits - lse)·(-Σg)) in one pass per row on a kernel of our own (csrc/head_softmax.cpp, e^x by AVX-512 polynomial; where the AVX-512 library does not load, csrc/avx2/head_softmax_avx2.cpp, 8 lanes) | `fused_head` | `fused_head.target_logps(softmax_kernel=)` | on where `fused_head.softmax_kernel_pays`: the CPUs `kernels.measured_cpu` allows, where the kernels build, for fp32 logits (a block of 341 x 49,152, 2 threads, AMD EPYC Zen 4: logsumexp 15.7 -> 4.1 ms, the backward's passes 12.4 -> 1.6 ms, a DPO batch's model work 20.48 -> 20.25 s, docs/bench/zen4/head_softmax_6.md; Zen 5: logsumexp 13.4 -> 2.3 ms, the backward's passes 10.4 -> 2.4 ms; a DPO batch's model work, the two alternated in one process, 11.02 -> 10.47 s, docs/bench/amd/head_softmax.md; on Intel the same AVX-512 e^x as the span kernel's softmax, this op not yet measured there); the AVX2 form on the CPUs `kernels.measured_avx2_cpu("head")` allows (the EPYCs of Zen 3: logsumexp 28.4 -> 6.9 ms, the backward's passes 24.0 -> 4.6 ms, a DPO batch's model work 23.36 -> 22.74 s, docs/bench/zen3/head_softmax.md); torch's ops elsewhere and for float64 |
| SwiGLU MLP keeping the gate and up outputs only for the backward (silu(g) * u recomputed there) | `fused_mlp` | `response_logps(mlp=)`, `prompt_pass(mlp=)` | "fused" for Llama / Qwen2 / Mistral MLPs of plain nn.Linear projections and silu, on CPU (SmolLM2-135M, two DPO steps' forwards + backward with spans and the fused head: peak RSS 7.32 -> 6.22 GB, CPU time the same within noise, 24-26 vs 26-30 s per step, one thread); "plain" elsewhere (never measured on a GPU) |
| a block's elementwise chains (RMSNorm, rotary, SwiGLU's backward) as compiled loops (torch.compile, inductor's C++ backend, dynamic shapes) | `compiled_elementwise` | `speed.elementwise` (`response_logps(elementwise=)`, `prompt_pass(elementwise=)`) | "compiled" for Llama / Qwen2 / Mistral models on CPU with a C++ compiler and an MLP width f >= 1,024 (SmolLM2-135M, f = 1,536, 2 threads: one batch, the two settings alternated 4 times, policy forward + reference forward + backward 14.82 -> 13.97 s; over an epoch of the smollm2 workloads, DPO step 15.29 -> 13.82 s, HyPO 24.43 -> 22.29 s, DPO peak RSS 9.03 -> 8.22 GB, docs/bench/history.md; compiling costs ~15 s once per process, ~3 s from inductor's disk cache, so it pays within the first steps of a wide model and never on the test suite's tiny ones, f <= 256); "eager" elsewhere (never measured on a GPU; GPT-NeoX / Pythia is not served: its LayerNorm and GELU are one aten kernel each with its own backward, which leaves rotary alone to fuse, not measured) |
| the log-prob forwards' and backwards' fp32 products (every plain nn.Linear, the fused MLP's down projection, the fused head's logits and d hidden) on oneDNN, shipped inside torch, instead of MKL | `onednn_gemm` | `speed.train_gemm` (`response_logps(train_gemm=)`, `prompt_pass(train_gemm=)`) | "onednn" on the AMD CPUs of `onednn_gemm.MEASURED_AMD` (Zen 4 EPYCs: x Wᵀ and dY W 1.1-1.6x MKL's rate, a DPO batch's model work 21.05 -> 20.02 s, docs/bench/zen4/train_gemm_paired.md; Zen 5) for fp32 weights on the CPU (SmolLM2-135M's shapes at 4,096 positions, 2 threads, AMD EPYC: MKL 180-190 GFLOP/s, oneDNN 380-430 for x Wᵀ and dY W, ~300 for dWᵀ, docs/bench/amd/matmul_paths.md); "library" (MKL) elsewhere: on Intel MKL runs at the machine's rate and oneDNN was not measured |
| keep freed CPU memory for reuse (glibc mallopt) | `cpu_memory` | `speed.keep_freed_memory`, applied by the command line, never by a library call | on for a run on CPU: 15% less time, 1.5-2x the resident memory; off on a GPU |
"""

from __future__ import annotations

DECODERS = ("auto", "lean", "neox", "llama", "transformers")
KV_CACHES = ("auto", "preallocated", "dynamic")
ATTENTIONS = ("auto", "spans", "masked")
HEADS = ("auto", "fused", "plain")
MLPS = ("auto", "fused", "plain")
ELEMENTWISE = ("auto", "compiled", "eager")
DECODE_GEMMS = ("auto", "panels", "library")
SPAN_KERNELS = ("auto", "ours", "flash")
TRAIN_GEMMS = ("auto", "onednn", "library")


def mlp_for(model, setting: str = "auto") -> str:
    """"fused" (hybridpo.fast.fused_mlp: a SwiGLU MLP keeping 2 of its 4 tensors for the backward) or "plain"."""
    from hybridpo.fast import fused_mlp

    return _fast_or_plain("mlp", setting, MLPS, "fused", "plain", lambda: fused_mlp.unsupported_reason(model))


def _fast_or_plain(name: str, setting: str, choices: tuple, fast: str, plain: str, reason) -> str:
    """The rule every two-way trick shares: `plain` when asked; `fast` where `reason()` (why the
    trick cannot serve this model, or None) allows it; asking for `fast` where it cannot serve is an
    error that says why."""
    if setting not in choices:
        raise ValueError(f"{name}={setting!r}; choose from {list(choices)}")
    if setting == plain:
        return setting
    why = reason()
    if setting == fast and why is not None:
        raise ValueError(f"{name}={fast!r} is not available: {why}")
    return fast if why is None else plain


def elementwise_for(model, setting: str = "auto") -> str:
    """"compiled" (hybridpo.fast.compiled_elementwise) or "eager" for `model` under `setting`;
    "auto" compiles only for an MLP width of at least compiled_elementwise.MIN_WIDTH (the rule in
    the table above)."""
    from hybridpo.fast import compiled_elementwise as ce

    def reason():
        why = ce.unsupported_reason(model)
        if why is None and setting == "auto" and not ce.wide_enough(model):
            return f"MLP width under {ce.MIN_WIDTH:,}: compiling costs more than it saves"
        return why

    return _fast_or_plain("elementwise", setting, ELEMENTWISE, "compiled", "eager", reason)


def span_kernel_for(model, setting: str = "auto") -> str:
    """What runs attention span by span (hybridpo.fast.varlen_attention) under `setting`: "ours"
    (csrc/span_attention.cpp) or "flash" (torch's CPU flash kernel); "auto" takes ours where it was
    measured (Intel, and AMD's Zen 4 EPYCs and Zen 5: hybridpo.fast.kernels.measured_cpu) and where the kernels
    build (the rule in the table above)."""
    from hybridpo.fast import varlen_attention

    def reason():  # "auto" asks the cheap rule first: the kernels are built only where they would serve
        if setting == "auto":
            why = varlen_attention.ours_pays_here(model)
            if why is not None:
                return why
        return varlen_attention.ours_unsupported_reason()

    return _fast_or_plain("span_kernel", setting, SPAN_KERNELS, "ours", "flash", reason)


def train_gemm_for(model, setting: str = "auto") -> str:
    """What runs the log-prob forwards' and backwards' fp32 products under `setting`: "onednn"
    (hybridpo.fast.onednn_gemm) or "library" (MKL, torch's own); "auto" takes oneDNN where it was
    measured to pay (the rule in the table above)."""
    from hybridpo.fast import onednn_gemm

    def reason():  # "auto" asks the measured rule first
        return (setting == "auto" and onednn_gemm.pays_here(model)) or onednn_gemm.unsupported_reason()

    return _fast_or_plain("train_gemm", setting, TRAIN_GEMMS, "onednn", "library", reason)


def block_scope(model, mlp: str = "auto", elementwise: str = "auto", span_kernel: str = "auto",
                train_gemm: str = "auto"):
    """The context a log-prob forward runs in: hybridpo.fast.fused_mlp.fused_mlps under `mlp`,
    hybridpo.fast.compiled_elementwise.compiled_blocks under `elementwise`, the span kernel
    span_kernel_for(model, span_kernel) names (read by hybridpo.fast.varlen_attention), and the
    products' library train_gemm_for(model, train_gemm) names (hybridpo.fast.onednn_gemm)."""
    import contextlib

    from hybridpo.fast import compiled_elementwise, fused_mlp, onednn_gemm, varlen_attention

    stack = contextlib.ExitStack()
    stack.enter_context(varlen_attention.kernel_scope(span_kernel_for(model, span_kernel)))
    if train_gemm_for(model, train_gemm) == "onednn":
        stack.enter_context(onednn_gemm.gemms(model))
    compiled = elementwise_for(model, elementwise) == "compiled"
    if mlp_for(model, mlp) == "fused":
        stack.enter_context(fused_mlp.fused_mlps(model, compiled=compiled))
    if compiled:
        stack.enter_context(compiled_elementwise.compiled_blocks(model))
    return stack


def share_prompt_rule(model, prompts, responses=None, samples=None, attention: str = "auto") -> bool:
    """Whether one prompt pass should serve the sampler and the loss (hybridpo.fast.prompt_rule),
    with the responses' forward in the layout `attention` resolves to (attention_for)."""
    from hybridpo.fast import prompt_rule

    return prompt_rule.decide(model, prompts, responses, samples, attention_for(model, attention))


def head_for(model, setting: str = "auto") -> str:
    """"fused" (hybridpo.fast.fused_head) or "plain" (the model's head, then log_softmax_at) for `model`."""
    from hybridpo.fast import fused_head

    return _fast_or_plain("head", setting, HEADS, "fused", "plain", lambda: fused_head.unsupported_reason(model))


def attention_for(model, setting: str = "auto") -> str:
    """"spans" (hybridpo.fast.varlen_attention) or "masked" (the packed rows' 4D mask) for `model` under `setting`."""
    from hybridpo.fast import varlen_attention

    return _fast_or_plain("attention", setting, ATTENTIONS, "spans", "masked",
                          lambda: varlen_attention.unsupported_reason(model))


def decoder_for(model, setting: str = "auto") -> str:
    """The sampler's decode step for `model` (the transformers model, unwrapped) under `setting`:
    "neox" (hybridpo.fast.neox_decode), "llama" (hybridpo.fast.llama_decode) or "transformers".
    "lean" asks for the family's lean step, "neox" / "llama" for that one (an error where it does
    not apply)."""
    from hybridpo.fast import llama_decode, neox_decode

    if setting not in DECODERS:
        raise ValueError(f"decoder={setting!r}; choose from {list(DECODERS)}")
    if setting == "transformers":
        return setting
    reasons = {"neox": neox_decode.unsupported_reason(model), "llama": llama_decode.unsupported_reason(model)}
    if setting in reasons:
        if reasons[setting] is not None:
            raise ValueError(f"decoder={setting!r} is not available: {reasons[setting]}")
        return setting
    usable = [name for name, reason in reasons.items() if reason is None]
    if setting == "lean":
        if not usable:
            raise ValueError(f"decoder='lean' is not available: {'; '.join(reasons.values())}")
        return usable[0]
    import torch

    weight = next(model.parameters())
    # measured in fp32 on CPU only; under autocast (bf16 / fp16) the folded fp32 weights would meet
    # half-precision activations, so transformers' forward decodes there. Not size-aware: the lean
    # step was faster at every size measured (table above, docs/bench/decode_rule.py)
    plain_fp32 = weight.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
    return usable[0] if usable and weight.device.type == "cpu" and plain_fp32 else "transformers"


def lean_decode(name: str, model, *args, gemm: str = "auto", **kwargs):
    """hybridpo.fast.neox_decode.decode with the decode step `name` ("neox" or "llama") names, its
    products as decode_gemm_for(model, gemm) says."""
    from hybridpo.fast import llama_decode, neox_decode

    classes = {"neox": neox_decode.NeoXDecoder, "llama": llama_decode.LlamaDecoder}
    linear = None
    if decode_gemm_for(model, gemm) == "panels":
        from hybridpo.fast.panel_linear import PanelLinear as linear, PanelLlamaDecoder

        classes["llama"] = PanelLlamaDecoder  # the Llama block fused around the kernel's products
    return neox_decode.decode(model, *args, decoder_class=classes[name], linear=linear, **kwargs)


def decode_gemm_for(model, setting: str = "auto") -> str:
    """The lean decode step's few-row products under `setting`: "panels" (hybridpo.fast.panel_linear,
    a kernel of our own) or "library" (MKL's packed product, neox_decode.PackedLinear); "auto" takes
    the panels only where panel_linear.pays_here (the rule in the table above)."""
    from hybridpo.fast import panel_linear

    def reason():  # "auto" asks the cheap rule first: the kernel is built only where it would serve
        return (setting == "auto" and panel_linear.pays_here(model)) or panel_linear.unsupported_reason()

    return _fast_or_plain("decode_gemm", setting, DECODE_GEMMS, "panels", "library", reason)


def kv_cache_for(setting: str, plain_layers: bool) -> str:
    """"preallocated" or "dynamic" under `setting`, given whether the prefilled cache is plain layers."""
    if setting not in KV_CACHES:
        raise ValueError(f"kv_cache={setting!r}; choose from {list(KV_CACHES)}")
    if setting == "preallocated" and not plain_layers:
        raise ValueError("kv_cache='preallocated' needs a cache of plain layers (not sliding windows)")
    if setting == "auto":
        return "preallocated" if plain_layers else "dynamic"
    return setting
