"""The fused LM head + target log-prob (hybridpo.fast.fused_head): the plain path's numbers and
gradients, block by block; through response_logps, the padded reference's (1e-5, fp32)."""

import pytest
import torch
from torch.testing import assert_close

from hybridpo.fast import fused_head, head_for
from hybridpo.forward import prompt_pass, response_logps
from hybridpo.forward.logprobs import log_softmax_at

from test_varlen_attention import PAD, CASES, assert_same, batch, grads, model_of


@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_target_logps_equal_the_plain_head_and_log_softmax(monkeypatch, recompute, temperature):
    monkeypatch.setattr(fused_head, "BLOCK_BYTES", 4 * 50 * 3)  # 3 rows per block: 7 rows make 3 blocks
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(7, 5, generator=g, requires_grad=True)
    head = torch.nn.Linear(5, 50, bias=True)
    rows = torch.tensor([0, 0, 1, 3, 3, 6, 2, 5])  # a row read twice (a prompt's last position), row 4 never
    targets = torch.tensor([1, 7, 49, 0, 3, 10, 10, 22])
    w = torch.linspace(-1.0, 2.0, len(rows))
    got = fused_head.target_logps(hidden, head, rows, targets, temperature, recompute=recompute)
    g_got = torch.autograd.grad((w * got).sum(), (hidden, head.weight, head.bias))
    want = log_softmax_at(head(hidden), rows, targets, temperature)
    g_want = torch.autograd.grad((w * want).sum(), (hidden, head.weight, head.bias))
    assert_close(got, want, atol=1e-6, rtol=0)
    for a, b in zip(g_got, g_want):
        assert_close(a, b, atol=1e-6, rtol=1e-5)
    with torch.no_grad():  # the reference's path: no graph, one block at a time
        assert_close(fused_head.target_logps(hidden, head, rows, targets, temperature), want, atol=1e-6, rtol=0)


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
