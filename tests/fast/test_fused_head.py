"""The fused LM head + target log-prob (hybridpo.fast.fused_head): the plain path's numbers and
gradients, block by block; through response_logps, the padded reference's (1e-5, fp32)."""

import pytest
import torch
from torch.testing import assert_close

from hybridpo.fast import fused_head, head_for, kernels
from hybridpo.forward import prompt_pass, response_logps
from hybridpo.forward.logprobs import log_softmax_at

from test_panel_linear import a_cpu
from test_varlen_attention import PAD, CASES, assert_same, batch, grads, model_of

WHY = kernels.load_either()
needs_kernel = pytest.mark.skipif(WHY is not None, reason=f"our kernels are unavailable here: {WHY}")
SOFTMAX = [False, pytest.param(True, marks=needs_kernel)]  # torch's ops; our kernel in the form that loads
FORMS = [pytest.param(form, marks=pytest.mark.skipif(why is not None, reason=f"unavailable here: {why}"), id=form)
         for form, why in (("avx512", kernels.load()), ("avx2", kernels.load_avx2()))]


@pytest.mark.parametrize("softmax_kernel", SOFTMAX)
@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_target_logps_equal_the_plain_head_and_log_softmax(monkeypatch, recompute, temperature, softmax_kernel):
    monkeypatch.setattr(fused_head, "BLOCK_BYTES", 4 * 50 * 3)  # 3 rows per block: 7 rows make 3 blocks
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(7, 5, generator=g, requires_grad=True)
    head = torch.nn.Linear(5, 50, bias=True)
    rows = torch.tensor([0, 0, 1, 3, 3, 6, 2, 5])  # a row read twice (a prompt's last position), row 4 never
    targets = torch.tensor([1, 7, 49, 0, 3, 10, 10, 22])
    w = torch.linspace(-1.0, 2.0, len(rows))
    got = fused_head.target_logps(hidden, head, rows, targets, temperature, recompute=recompute,
                                  softmax_kernel=softmax_kernel)
    g_got = torch.autograd.grad((w * got).sum(), (hidden, head.weight, head.bias))
    want = log_softmax_at(head(hidden), rows, targets, temperature)
    g_want = torch.autograd.grad((w * want).sum(), (hidden, head.weight, head.bias))
    assert_close(got, want, atol=1e-6, rtol=0)
    for a, b in zip(g_got, g_want):
        assert_close(a, b, atol=1e-6, rtol=1e-5)
    with torch.no_grad():  # the reference's path: no graph, one block at a time
        assert_close(fused_head.target_logps(hidden, head, rows, targets, temperature, softmax_kernel=softmax_kernel),
                     want, atol=1e-6, rtol=0)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("V", [49152, 50, 7, 3])  # SmolLM2's vocabulary (whole 1,024-term chunks), a tail, under 16 / 8 lanes
def test_the_softmax_kernel_against_float64(V, form, monkeypatch):
    """head_lse and head_scaled_softmax_ (csrc/head_softmax.cpp, csrc/avx2/head_softmax_avx2.cpp)
    against float64 on logits of a real head's spread (std 4), to the rounding of their fp32
    results; and torch's answers where a row holds -inf, +inf or NaN."""
    if form == "avx2":
        monkeypatch.setattr(kernels, "load", lambda: "AVX-512 taken away by the test")
    ops = kernels.either_ops()
    assert ops is (torch.ops.hybridpo_panel_avx2 if form == "avx2" else torch.ops.hybridpo_panel)
    g = torch.Generator().manual_seed(V)
    logits = torch.randn(37, V, generator=g) * 4
    logits[3, : V // 2] = float("-inf")  # masked tokens
    want = logits.double().logsumexp(-1)
    got = ops.head_lse(logits)
    # the fp32 rounding of the result (half an ulp: 6e-8 of it) plus log(sum)'s own (~1e-7 absolute)
    assert_close(got.double(), want, atol=2e-7, rtol=2e-7)
    scale = torch.randn(37, generator=g)
    soft = ops.head_scaled_softmax_(logits.clone(), want.float(), scale)
    assert_close(soft.double(), (logits.double() - want[:, None]).exp() * scale[:, None].double(), atol=1e-7, rtol=1e-5)
    odd = torch.tensor([[0.0, float("-inf"), 1.0], [float("-inf")] * 3, [float("nan"), 0.0, 0.0], [float("inf"), 0.0, 1.0]])
    assert_close(ops.head_lse(odd), odd.logsumexp(-1), equal_nan=True)


@needs_kernel
def test_the_softmax_kernel_turns_off_where_it_cannot_serve():
    """A float64 model takes torch's ops even when the kernel is asked for (the kernel is fp32): its
    log-probs stay float64 and exact."""
    hidden = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    head = torch.nn.Linear(5, 11, bias=False).double()
    rows, targets = torch.tensor([0, 1, 3]), torch.tensor([2, 4, 10])
    got = fused_head.target_logps(hidden, head, rows, targets, softmax_kernel=True)
    assert got.dtype == torch.float64
    assert_close(got, torch.log_softmax(head(hidden), -1)[rows, targets], atol=1e-12, rtol=0)


def test_asking_for_the_softmax_kernel_where_it_does_not_build_says_why(monkeypatch):
    monkeypatch.setattr(kernels, "load", lambda: "no C++ compiler on PATH (c++, or $CXX)")
    monkeypatch.setattr(kernels, "load_avx2", lambda: "no C++ compiler on PATH (c++, or $CXX)")
    hidden, head = torch.randn(2, 5), torch.nn.Linear(5, 11)
    with pytest.raises(ValueError, match="softmax_kernel=True is not available: no C\\+\\+ compiler"):
        fused_head.target_logps(hidden, head, torch.tensor([0]), torch.tensor([3]), softmax_kernel=True)


@pytest.mark.parametrize("attention", ["spans", "masked"])
@pytest.mark.parametrize("arch", ["gpt-neox", "llama"])  # untied head; tied to the embedding (SmolLM2's)
def test_fused_head_through_each_layout_equals_padded(arch, attention):
    model = model_of(arch)
    if arch == "llama":
        model.tie_weights()  # the head's gradient adds to the embedding's
    assert head_for(model) == "fused"
    prompts, responses = batch("mixed")
    padded = response_logps(model, prompts, responses, pad_id=PAD, layout="padded", temperature=0.7)
    g_padded = grads(model, padded)
    fast = response_logps(model, prompts, responses, pad_id=PAD, temperature=0.7, attention=attention, head="fused")
    assert_same(fast, padded, grads(model, fast), g_padded)
    pp = prompt_pass(model, prompts, pad_id=PAD, attention=attention)
    shared = response_logps(model, prompts, responses, pad_id=PAD, prompt_pass=pp, temperature=0.7,
                            attention=attention, head="fused")
    assert_same(shared, padded, grads(model, shared), g_padded)


def test_heads_that_do_more_than_a_linear_stay_plain():
    model = model_of("llama")
    model.config.logit_scale = 2.0  # Cohere / Granite-style logit scaling
    assert head_for(model) == "plain"
    with pytest.raises(ValueError, match="logit_scale"):
        head_for(model, "fused")
    assert head_for(model_of("llama"), "plain") == "plain"


def test_a_second_backward_recomputes_the_freed_logits():
    hidden = torch.randn(4, 5, requires_grad=True)
    head = torch.nn.Linear(5, 11, bias=False)
    rows, targets = torch.tensor([0, 1, 3]), torch.tensor([2, 4, 10])
    out = fused_head.target_logps(hidden, head, rows, targets).sum()
    first = torch.autograd.grad(out, hidden, retain_graph=True)[0]
    assert_close(torch.autograd.grad(out, hidden)[0], first)


def test_a_hooked_head_stays_plain():
    """A forward hook on the head may change its output (tests/eval bumps a token's logit): the fused
    path, which reads the weight directly, would skip it."""
    model = model_of("llama")
    model.get_output_embeddings().register_forward_hook(lambda m, args, out: out + 1.0)
    assert head_for(model) == "plain"


@pytest.mark.parametrize(("family", "model", "measured"), [("25", "1", True), ("25", "16", False), ("23", "49", False)])
def test_without_avx512_the_softmax_kernel_is_taken_where_it_was_measured(monkeypatch, family, model, measured):
    """Where the AVX-512 kernels do not load, the AVX2 softmax is taken on the Zen 3 EPYCs it was
    measured on (family 25, models 0x00-0x0F), not on Zen 2."""
    a_cpu(monkeypatch, "AuthenticAMD", family, avx512=False, model=model)
    fused_head.softmax_kernel_pays.cache_clear()
    try:
        assert fused_head.softmax_kernel_pays() == (measured and kernels.load_avx2() is None)
    finally:
        fused_head.softmax_kernel_pays.cache_clear()  # the next caller reads this machine again
