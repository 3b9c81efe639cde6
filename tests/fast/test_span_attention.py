"""Our span kernel (csrc/span_attention.cpp, or csrc/avx2/span_attention_avx2.cpp where the
AVX-512 form does not load, via hybridpo.fast.varlen_attention), in every form that loads here:
each span's output, and q / k / v gradients, against a float64 loop over the spans; through a
model, the packed and after-a-prompt-pass log-probs and parameter gradients against the padded
reference (1e-5, fp32); the cases it leaves to the flash kernel; and where "auto" takes it."""

import pytest
import torch
from torch.testing import assert_close

from hybridpo.fast import kernels, span_kernel_for
from hybridpo.fast import varlen_attention as va
from hybridpo.forward import prompt_pass, response_logps
from ragged import batch, grads
from test_panel_linear import a_cpu
from test_varlen_attention import PAD, VOCAB, assert_same, model_of

WHY = va.ours_unsupported_reason()
needs_kernel = pytest.mark.skipif(WHY is not None, reason=f"our kernels are unavailable here: {WHY}")
FORMS = [pytest.param(form, marks=pytest.mark.skipif(why is not None, reason=f"unavailable here: {why}"), id=form)
         for form, why in (("avx512", kernels.load()), ("avx2", kernels.load_avx2()))]


def in_form(monkeypatch, form: str):
    """The ops of `form`, and varlen_attention's kernel made that form: the AVX2 one is taken where
    the AVX-512 library does not load, so for "avx2" the test hides it."""
    if form == "avx2":
        monkeypatch.setattr(kernels, "load", lambda: "AVX-512 taken away by the test")
    ops = va.ours()
    assert ops is (torch.ops.hybridpo_panel_avx2 if form == "avx2" else torch.ops.hybridpo_panel)
    return ops


def dense(q, k, v, plan, scale):
    """float64, span by span: query t of a span sees the keys before its own and its own up to t.
    q (N, H, D); k, v (Nk, KV, D)."""
    H, G = q.shape[1], q.shape[1] // k.shape[1]
    out = torch.zeros(q.shape, dtype=torch.float64)
    for span in plan.spans:
        idx = [i for a, b in span.keys for i in range(a, b)]
        n, m = span.q1 - span.q0, len(idx)
        hidden = torch.arange(m)[None, :] > (m - n + torch.arange(n))[:, None]
        for h in range(H):
            s = (q[span.q0 : span.q1, h].double() @ k[idx, h // G].double().T * scale).masked_fill(hidden, float("-inf"))
            out[span.q0 : span.q1, h] = torch.softmax(s, -1) @ v[idx, h // G].double()
    return out


def layouts():
    """A packed row (prompts, responses after them, a 1-token response, a 17-token one across a key
    panel) and the responses after a flat prompt pass of 30 cached keys."""
    prompts, responses = [[0] * 5, [0] * 1, [0] * 19], [[[0] * 3, [0] * 17], [[0]], [[0] * 4, [0] * 1, [0] * 6]]
    packed = va.packed_row(prompts, responses).plan
    after = va.after_prompt_row([5, 1, 19], [0, 5, 6], 30, responses).plan  # keys: the 25 cached, then the row
    return {"packed": packed, "after": after}


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("heads,kv,d", [(4, 2, 16), (9, 3, 64), (6, 6, 32)])
@pytest.mark.parametrize("layout", ["packed", "after"])
def test_spans_equal_a_float64_loop(layout, heads, kv, d, form, monkeypatch):
    ops = in_form(monkeypatch, form)
    plan = layouts()[layout]
    g = torch.Generator().manual_seed(heads * d)
    q = torch.randn(plan.queries, heads, d, generator=g)
    k, v = torch.randn(2, plan.keys, kv, d, generator=g).unbind(0)
    scale = d ** -0.5 * 2.0  # sharp: a wrong key set shows
    out, lse = ops.span_attention(q, k, v, plan.table(), scale)
    qd, kd, vd = (t.double().requires_grad_() for t in (q, k, v))
    want = dense(qd, kd, vd, plan, scale)
    assert_close(out.double(), want, atol=1e-5, rtol=0)
    grad = torch.randn(q.shape, generator=g)
    want.backward(grad.double())
    dq, dk, dv = ops.span_attention_backward(grad, q, k, v, out, lse, plan.table(), scale)
    for got, ref in ((dq, qd.grad), (dk, kd.grad), (dv, vd.grad)):
        assert_close(got.double(), ref, atol=1e-5 * float(ref.abs().max()), rtol=0)
    cached = plan.keys - plan.queries  # keys no span reads get no gradient
    used = {i for s in plan.spans for a, b in s.keys for i in range(a, b)}
    assert all(float(dk[i].abs().max()) == 0 for i in range(cached) if i not in used)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral", "gpt-neox"])
def test_through_a_model_both_kernels_equal_padded(arch, form, monkeypatch):
    in_form(monkeypatch, form)
    model = model_of(arch, hidden_size=64, num_attention_heads=4)
    assert model.config.hidden_size // model.config.num_attention_heads == 16
    prompts, responses = batch("mixed", VOCAB)
    padded = response_logps(model, prompts, responses, pad_id=PAD, layout="padded", temperature=0.7)
    g_padded = grads(model, padded)
    for kernel in va.KERNELS:
        with va.kernel_scope(kernel):
            packed = response_logps(model, prompts, responses, pad_id=PAD, attention="spans", temperature=0.7)
            assert_same(packed, padded, grads(model, packed), g_padded)
            pp = prompt_pass(model, prompts, pad_id=PAD, attention="spans")
            after = response_logps(model, prompts, responses, pad_id=PAD, prompt_pass=pp, temperature=0.7,
                                   attention="spans")
            assert_same(after, padded, grads(model, after), g_padded)


@needs_kernel
def test_ours_leaves_what_it_cannot_take_to_flash(monkeypatch):
    """Heads 8 wide (off the 16-lane grid) under "ours" take the flash kernel, and agree."""
    model = model_of("llama")  # hidden 32 over 4 heads: 8 wide
    plan = layouts()["packed"]
    assert not va.ours_serves(torch.zeros(1, 4, plan.queries, 8), torch.zeros(1, 2, plan.keys, 8), plan)
    assert va.ours_serves(torch.zeros(1, 4, plan.queries, 16), torch.zeros(1, 2, plan.keys, 16), plan)
    monkeypatch.setattr(va, "_OurSpanAttention", None)  # taking our kernel's path would fail
    prompts, responses = batch("pairs", VOCAB)
    with va.kernel_scope("ours"):
        got = response_logps(model, prompts, responses, pad_id=PAD, attention="spans")
    want = response_logps(model, prompts, responses, pad_id=PAD, layout="padded")
    assert_close(got.tok_logps, want.tok_logps, atol=1e-5, rtol=0)


def test_kernel_scope_refuses_an_unknown_kernel():
    with pytest.raises(ValueError, match="span kernel 'fast'"), va.kernel_scope("fast"):
        pass


@pytest.mark.parametrize(("family", "model", "measured"), [("25", "1", True), ("25", "15", True), ("25", "16", False),
                                                           ("23", "49", False), ("26", "2", False)])
def test_without_avx512_auto_takes_the_avx2_form_where_it_was_measured(monkeypatch, family, model, measured):
    """Where the AVX-512 kernels do not load, "auto" takes the AVX2 span kernel on the Zen 3 EPYCs
    it was measured on (family 25, models 0x00-0x0F); Zen 2, where only the AVX2 decode was
    measured, keeps the flash kernel."""
    a_cpu(monkeypatch, "AuthenticAMD", family, avx512=False, model=model)
    tiny = model_of("llama", hidden_size=64, num_attention_heads=4)  # heads of 16, on the kernel's grid
    why = va.ours_pays_here(tiny)
    assert (why is None) == measured
    if not measured:
        assert why == kernels.measured_avx2_cpu("spans") and "Zen 3" in why and "Zen 2" not in why
    assert span_kernel_for(tiny) == ("ours" if measured and kernels.load_avx2() is None else "flash")
    with pytest.raises(ValueError, match="kernel 'fast'"):
        kernels.measured_avx2_cpu("fast")
