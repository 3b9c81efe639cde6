"""Attention of a packed batch computed per span: one unpadded row, no (T, T) mask, no GQA repeat.

The packed layout (hybridpo.forward.layout) bin-packs groups (a prompt and its responses) into rows
as wide as the widest group and hides what a token may not see with a 4D float mask. On CPU that
costs twice (measured on SmolLM2-135M, 8 UltraFeedback pairs, one thread, one block forward +
backward): the rows are 23% padding that every projection and MLP computes, and SDPA's flash
kernel cannot skip a masked block, so it scores every (query, key) pair of every row (202 ms)
while the scores a token needs take 105 ms when computed span by span (measured while building
this module; no script of it was kept, the rule's figures are in hybridpo/fast/__init__.py). Here every group lies back to back in ONE row without padding, and
attention runs once per span with the keys the span may see:

    a prompt                    its own tokens, causal (the flash kernel's is_causal: no mask)
    a response                  its prompt's keys + its own, causal within (a small (n, m + n) mask)
    a response after a cached   its prompt's cached keys (the prompt pass, laid out flat) + its own
    prompt pass

Grouped-query attention reads the key / value heads as they are (the CPU flash kernel takes
9 query heads over 3 key / value heads), so no repeated copy of the keys is made or saved for the
backward. Each span runs on one of two kernels (KERNELS, chosen by hybridpo.fast.span_kernel_for
through `kernel_scope`):
- "flash": torch's (`_scaled_dot_product_flash_attention_for_cpu` and its backward), called span
  by span inside one autograd function, so the backward writes each span's gradient into one
  buffer instead of summing a full-size gradient per slice;
- "ours": csrc/span_attention.cpp, every span in one call forward and one backward. The flash
  kernel ran SmolLM2's spans at ~70 GFLOP/s forward and its backward at 2.6x its forward's time;
  ours takes a span forward + backward in half the time (330 tokens: 6.67 -> 3.21 ms), a DPO
  batch's model work 16.73 -> 14.23 s (docs/bench/smollm2/span_kernel_*.md). Where the AVX-512
  library does not load, `ours()` is csrc/avx2/span_attention_avx2.cpp, the same algorithm in 8
  lanes (Zen 3: 330 tokens 8.68 -> 4.30 ms, a DPO batch 25.16 -> 22.94 s;
  docs/bench/zen3/span_kernel_*.md). Calls it cannot take (heads off the 16-lane grid, half
  precision) go to flash.
The numbers are attention's: tests/fast/test_varlen_attention.py checks values and gradients
against the padded layout, tests/fast/test_span_attention.py our kernel against float64 and
against the padded layout through a model.

How it reaches the model: transformers' attention layers call the function that
`config._attn_implementation` names. `spans(model, plan)` registers this one under NAME and
switches the config of every module of the model to it for one forward (then back), with the
plan in a context variable; the 4D mask given to the model is a marker of the wrong shape
(`marker_mask`), so a layer that somehow is not switched fails loudly instead of attending with
it. Only CPU models whose attention is known to call the interface qualify (`unsupported_reason`).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from dataclasses import dataclass, field

import torch
from torch import Tensor

NAME = "hybridpo_varlen"
MODEL_TYPES = ("llama", "qwen2", "mistral", "gpt_neox")  # attention through ALL_ATTENTION_FUNCTIONS (tests/fast)

KERNELS = ("ours", "flash")  # what runs each span (hybridpo.fast.span_kernel_for chooses)

_PLAN: contextvars.ContextVar = contextvars.ContextVar("hybridpo_varlen_plan", default=None)
_KERNEL: contextvars.ContextVar = contextvars.ContextVar("hybridpo_varlen_kernel", default="flash")


@dataclass(frozen=True)
class Span:
    """One attention call: queries [q0, q1) of the row see the keys of `keys` (ranges on the key
    axis, in order), the last q1 - q0 of which are the queries' own tokens; query i sees the
    `prefix` keys before them and its own tokens up to itself."""

    q0: int
    q1: int
    keys: tuple[tuple[int, int], ...]
    prefix: int  # keys before the span's own tokens (0 for a prompt: plain causal)


@dataclass
class Plan:
    """The spans of one forward: `queries` tokens in the row, `keys` on the key axis (a cached
    prompt pass first, then the row)."""

    queries: int
    keys: int
    spans: list[Span]
    _built: dict = field(default_factory=dict)  # the masks and our kernel's table, each built once

    def table(self) -> Tensor | None:
        """(S, 6) int64 rows q0, q1, a1, b1, a2, b2 (a second key range or 0, 0) for our kernel, built
        once; None where a span has more than two key ranges (or keys other than its prefix and its own)."""
        if "table" not in self._built:
            rows = []
            for sp in self.spans:
                ranges = [r for r in sp.keys if r[1] > r[0]]
                if len(ranges) > 2 or sum(b - a for a, b in ranges) != sp.prefix + sp.q1 - sp.q0:
                    self._built["table"] = None
                    break
                flat = [x for r in ranges for x in r] + [0, 0] * (2 - len(ranges))
                rows.append([sp.q0, sp.q1, *flat])
            else:
                self._built["table"] = torch.tensor(rows, dtype=torch.long).reshape(-1, 6)
        return self._built["table"]

    def mask(self, span: Span, like: Tensor) -> Tensor | None:
        """(1, 1, n, prefix + n) additive mask of a span with a prefix (built once per shape), else None."""
        if span.prefix == 0:
            return None
        n = span.q1 - span.q0
        key = (n, span.prefix, like.dtype, like.device)
        if key not in self._built:
            own = torch.ones(n, n, dtype=torch.bool, device=like.device).triu(1)  # a later own token
            hidden = torch.cat([own.new_zeros(n, span.prefix), own], dim=1)
            self._built[key] = torch.zeros(hidden.shape, dtype=like.dtype, device=like.device).masked_fill(
                hidden, float("-inf"))[None, None]
        return self._built[key]


def unsupported_reason(model) -> str | None:
    """None when `model`'s attention can run per span here; otherwise why not."""
    from hybridpo.forward import hf

    reason = hf.packing_unsupported_reason(model)
    if reason is not None:
        return reason
    inner = hf.unwrap_model(model)
    config = inner.config
    if config.model_type not in MODEL_TYPES:
        return f"model type {config.model_type!r} is not one whose attention is known to call the interface"
    if hf.device_of(model).type != "cpu":
        return "the per-span kernels are the CPU flash-attention ones (never measured on a GPU)"
    if hf.sliding_window(config) is not None:
        return "sliding-window attention"
    if getattr(config, "attn_logit_softcapping", None):
        return "attention logit soft-capping"
    if model.training and any(isinstance(getattr(config, n, None), float) and getattr(config, n) > 0
                              for n in ("attention_dropout", "attn_pdrop")):
        return "attention dropout in training mode"
    if not hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward"):
        return "this torch has no CPU flash-attention backward"
    return None


def marker_mask(queries: int, keys: int, dtype: torch.dtype, device) -> Tensor:
    """The 4D "mask" a per-span forward passes: zeros of shape (1, 1, queries + 1, keys + 1), which
    no attention layer can apply to (queries, keys) scores, so a layer that did not take the per-span
    path raises instead of attending with it. Stride-0: no memory."""
    return torch.zeros((), dtype=dtype, device=device).expand(1, 1, queries + 1, keys + 1)


@contextlib.contextmanager
def spans(model, plan: Plan):
    """Within: every attention layer of `model` computes attention span by span from `plan`."""
    _register()
    configs = {id(c): c for c in _configs(model)}.values()
    before = [(c, c._attn_implementation) for c in configs]
    token = _PLAN.set(plan)
    try:
        for c in configs:
            c._attn_implementation = NAME
        yield plan
    finally:
        for c, impl in before:
            c._attn_implementation = impl
        _PLAN.reset(token)


def _configs(model):
    """Every config object an attention layer of `model` may read (deep-copied layers, e.g. a
    frozen-trunk reference's, hold their own copies)."""
    from hybridpo.forward import hf

    yield hf.unwrap_model(model).config
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and hasattr(config, "_attn_implementation"):
            yield config


@functools.cache
def _register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, attention)


def attention(module, query: Tensor, key: Tensor, value: Tensor, attention_mask, dropout: float = 0.0,
              scaling: float | None = None, **kwargs):
    """transformers' attention-function signature: query (1, H, Q, D), key / value (1, KV, K, D) ->
    ((1, Q, H, D), None), from the active plan."""
    plan = _PLAN.get()
    if plan is None:
        raise RuntimeError(f"attention {NAME!r} called outside hybridpo.fast.varlen_attention.spans()")
    if query.shape[0] != 1 or query.shape[2] != plan.queries or key.shape[2] != plan.keys:
        raise RuntimeError(f"per-span attention planned for {plan.queries} queries over {plan.keys} keys, "
                           f"got query {tuple(query.shape)}, key {tuple(key.shape)}")
    if dropout:
        raise RuntimeError("per-span attention has no dropout")
    if kwargs.get("softcap") is not None or kwargs.get("s_aux") is not None or kwargs.get("sliding_window"):
        raise RuntimeError("per-span attention: soft-capping, sinks and sliding windows are not supported")
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    grad = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
    if _KERNEL.get() == "ours" and ours_serves(query, key, plan):
        if grad:
            return _OurSpanAttention.apply(query, key, value, plan, scale), None
        return ours().span_attention(*_by_position(query, key, value), plan.table(), scale)[0][None], None
    if grad:
        return _SpanAttention.apply(query, key, value, plan, scale), None
    return _forward(query, key, value, plan, scale)[0], None


@contextlib.contextmanager
def kernel_scope(kernel: str):
    """Within: spans run on `kernel`, one of KERNELS ("ours": csrc/span_attention.cpp where
    ours_serves the call, else the flash kernel)."""
    if kernel not in KERNELS:
        raise ValueError(f"span kernel {kernel!r}; choose from {list(KERNELS)}")
    token = _KERNEL.set(kernel)
    try:
        yield
    finally:
        _KERNEL.reset(token)


def ours():
    """Our span kernel's ops: the AVX-512 form (csrc/span_attention.cpp, torch.ops.hybridpo_panel)
    where it loads, else the AVX2 form (csrc/avx2/span_attention_avx2.cpp,
    torch.ops.hybridpo_panel_avx2); the same two calls, the same numbers up to rounding."""
    from hybridpo.fast import kernels

    return kernels.either_ops()


def ours_unsupported_reason() -> str | None:
    """None where a form of our span kernel is built and loaded (hybridpo.fast.kernels: the AVX-512
    library, or where it does not load the AVX2 one); otherwise why not."""
    from hybridpo.fast import kernels

    return kernels.load_either()


def ours_pays_here(model) -> str | None:
    """None where "auto" takes our kernel (the measured case: a CPU kernels.measured_cpu("spans") allows
    for the AVX-512 form, or, where that form does not load, one kernels.measured_avx2_cpu("spans")
    allows for the AVX2 form; fp32 heads on the 16-lane grid); otherwise why not. Nothing is built
    but the AVX-512 library, on a CPU with AVX-512 (as hybridpo.fast.panel_linear.pays_here)."""
    from hybridpo.fast import kernels
    from hybridpo.forward import hf

    why = kernels.measured_cpu("spans") if kernels.load() is None else kernels.measured_avx2_cpu("spans")  # the form that loads
    if why is not None:
        return why
    config = hf.unwrap_model(model).config
    width = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    if width % 16:
        return f"heads {width} wide: our kernel takes multiples of 16"
    weight = next(model.parameters())
    if weight.device.type != "cpu" or weight.dtype != torch.float32:
        return f"weights are {weight.dtype} on {weight.device.type}, not fp32 on the CPU"
    return None


def ours_serves(query: Tensor, key: Tensor, plan: Plan) -> bool:
    """Our kernel takes fp32 CPU heads of a multiple of 16 wide and spans of at most two key ranges."""
    return (query.dtype == key.dtype == torch.float32 and query.device.type == "cpu" and query.shape[-1] % 16 == 0
            and plan.table() is not None and ours_unsupported_reason() is None)


def _by_position(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(1, H, N, D) -> (N, H, D), contiguous: the projections' own layout, so no copy as a rule."""
    return tuple(t[0].transpose(0, 1).contiguous() for t in (q, k, v))


class _OurSpanAttention(torch.autograd.Function):
    """Every span in one call of csrc/span_attention.cpp, forward and backward (the backward
    recomputes the scores from the forward's log-sum-exps; each (span, key / value head) task
    keeps its own key gradients, summed into dk / dv after)."""

    @staticmethod
    def forward(ctx, q, k, v, plan: Plan, scale: float):
        qn, kn, vn = _by_position(q, k, v)
        out, lse = ours().span_attention(qn, kn, vn, plan.table(), scale)
        ctx.save_for_backward(qn, kn, vn, out, lse)
        ctx.plan, ctx.scale = plan, scale
        return out[None]

    @staticmethod
    def backward(ctx, grad):
        qn, kn, vn, out, lse = ctx.saved_tensors
        dq, dk, dv = ours().span_attention_backward(grad[0].contiguous(), qn, kn, vn, out, lse, ctx.plan.table(),
                                                    ctx.scale)
        return dq.transpose(0, 1)[None], dk.transpose(0, 1)[None], dv.transpose(0, 1)[None], None, None


def _keys(x: Tensor, span: Span) -> Tensor:
    """(1, KV, prefix + n, D): the span's key (or value) ranges, a view when there is one."""
    if len(span.keys) == 1:
        a, b = span.keys[0]
        return x[:, :, a:b]
    return torch.cat([x[:, :, a:b] for a, b in span.keys], dim=2)


def _forward(q: Tensor, k: Tensor, v: Tensor, plan: Plan, scale: float) -> tuple[Tensor, list[Tensor]]:
    H, Q, D = q.shape[1], q.shape[2], q.shape[3]
    out = q.new_empty((1, Q, H, D))
    lses = []
    for span in plan.spans:
        o, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q[:, :, span.q0 : span.q1], _keys(k, span), _keys(v, span), 0.0, span.prefix == 0,
            attn_mask=plan.mask(span, q), scale=scale)
        out[:, span.q0 : span.q1] = o.transpose(1, 2)
        lses.append(lse)
    return out, lses


class _SpanAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, plan: Plan, scale: float):
        out, lses = _forward(q, k, v, plan, scale)
        ctx.save_for_backward(q, k, v, out)
        ctx.lses, ctx.plan, ctx.scale = lses, plan, scale
        return out

    @staticmethod
    def backward(ctx, grad):
        q, k, v, out = ctx.saved_tensors
        plan = ctx.plan
        dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        for span, lse in zip(plan.spans, ctx.lses):
            sl = slice(span.q0, span.q1)
            gq, gk, gv = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
                grad[:, sl].transpose(1, 2), q[:, :, sl], _keys(k, span), _keys(v, span), out[:, sl].transpose(1, 2),
                lse, 0.0, span.prefix == 0, attn_mask=plan.mask(span, q), scale=ctx.scale)
            dq[:, :, sl] = gq
            start = 0
            for a, b in span.keys:  # the key ranges are disjoint within a span, not across spans
                dk[:, :, a:b] += gk[:, :, start : start + b - a]
                dv[:, :, a:b] += gv[:, :, start : start + b - a]
                start += b - a
        return dq, dk, dv, None, None


# ---------------------------------------------------------------------------------------------
# layouts: one unpadded row (pure index math, like hybridpo.forward.layout)


@dataclass
class Row:
    input_ids: Tensor  # (1, N) every token once, groups back to back, no padding
    position_ids: Tensor  # (1, N) as in the packed layout: 0..Lp-1 on a prompt, restarting at Lp per response
    needs_head: Tensor  # (1, N) bool: the U positions whose next token is a response token (or a prompt's last)
    target_head: Tensor  # (M,) per response token (prompt-major), its index into the U head positions
    target_ids: Tensor  # (M,) the response tokens
    plan: Plan
    prompt_start: list[int]  # (P,) first column of each prompt
    prompt_last_head: Tensor  # (P,) index into the U head positions of each prompt's last token


def packed_row(prompts, responses) -> Row:
    """Every group (a prompt, then its responses) back to back in one row; a response's token 0 is
    predicted at its prompt's last position, token t > 0 at its own position t - 1. With no
    responses (the prompt pass), the head positions are the prompts' last tokens."""
    ids: list[int] = []
    pos: list[int] = []
    head_cols: set[int] = set()
    predictors: list[list[int]] = []
    spans_, starts = [], []
    for p, rs in zip(prompts, responses):
        a, lp = len(ids), len(p)
        starts.append(a)
        ids += p
        pos += range(lp)
        spans_.append(Span(a, a + lp, ((a, a + lp),), 0))
        head_cols.add(a + lp - 1)
        s = a + lp
        for r in rs:
            n = len(r)
            if not n:
                continue
            ids += r
            pos += range(lp, lp + n)
            keys = ((a, s + n),) if s == a + lp else ((a, a + lp), (s, s + n))  # contiguous for the first
            spans_.append(Span(s, s + n, keys, lp))
            cols = [a + lp - 1, *range(s, s + n - 1)]
            head_cols.update(cols)
            predictors.append(cols)
            s += n
    N = len(ids)
    needs_head = torch.zeros(N, dtype=torch.bool)
    needs_head[sorted(head_cols)] = True
    head_index = needs_head.cumsum(0) - 1
    flat = torch.tensor([c for cols in predictors for c in cols], dtype=torch.long)
    last = torch.tensor([a + len(p) - 1 for a, p in zip(starts, prompts)], dtype=torch.long)
    return Row(
        input_ids=torch.tensor(ids, dtype=torch.long)[None],
        position_ids=torch.tensor(pos, dtype=torch.long)[None],
        needs_head=needs_head[None],
        target_head=head_index[flat] if len(flat) else flat,
        target_ids=torch.tensor([t for rs in responses for r in rs for t in r], dtype=torch.long),
        plan=Plan(N, N, spans_),
        prompt_start=starts,
        prompt_last_head=head_index[last],
    )


@dataclass
class AfterRow:
    input_ids: Tensor  # (1, N) the responses only, prompt-major, back to back
    position_ids: Tensor  # (1, N) each response continues from its prompt's length
    needs_head: Tensor  # (1, N) bool: positions predicting a response token t > 0
    target_rows: Tensor  # (M,) per response token, its row in cat([prompt last logits (P), the U rows])
    target_ids: Tensor  # (M,)
    plan: Plan


def after_prompt_row(prompt_lens: list[int], prompt_start: list[int], cached: int, responses) -> AfterRow:
    """The responses of every prompt in one row after a flat prompt pass of `cached` tokens (prompt i
    at cache columns prompt_start[i] .. + prompt_lens[i]); response token 0 is predicted by prompt
    i's last logits (row i), token t > 0 at the response's column t - 1."""
    ids: list[int] = []
    pos: list[int] = []
    head_cols: list[int] = []
    predictors: list[list[int]] = []  # -1 - i for prompt i's logits, else a column
    spans_ = []
    for i, (lp, a, rs) in enumerate(zip(prompt_lens, prompt_start, responses)):
        for r in rs:
            n = len(r)
            if not n:
                continue
            s = len(ids)
            ids += r
            pos += range(lp, lp + n)
            spans_.append(Span(s, s + n, ((a, a + lp), (cached + s, cached + s + n)), lp))
            head_cols += range(s, s + n - 1)
            predictors.append([-1 - i, *range(s, s + n - 1)])
    N = len(ids)
    needs_head = torch.zeros(N, dtype=torch.bool)
    needs_head[head_cols] = True
    head_index = needs_head.cumsum(0) - 1 + len(prompt_lens)  # column -> row after the P prompt rows
    flat = torch.tensor([c for cols in predictors for c in cols], dtype=torch.long)
    target_rows = torch.where(flat < 0, -1 - flat, head_index[flat.clamp(min=0)])
    return AfterRow(
        input_ids=torch.tensor(ids, dtype=torch.long)[None],
        position_ids=torch.tensor(pos, dtype=torch.long)[None],
        needs_head=needs_head[None],
        target_rows=target_rows,
        target_ids=torch.tensor([t for rs in responses for r in rs for t in r], dtype=torch.long),
        plan=Plan(N, cached + N, spans_),
    )
