"""Packed layout and shared prompt pass on every architecture family: values AND parameter
gradients equal the padded reference's (1e-5, fp32).

The cases cover prompts of different lengths (so left padding and row sharing matter), several
responses per prompt, 1-token responses (predicted by the prompt's last logits alone) and
sequences longer than mistral_window's sliding window of 6 (so a mask that forgets the window
shows). The prompt pass has two prefill branches, both checked: packed (prompts share rows, the
keys / values are gathered into the left-padded layout) and one left-padded forward (no two
prompts fit a row).
"""

import pytest
import torch
from torch.testing import assert_close

from family_models import FAMILIES, PAD, SHARED, VOCAB, family_model
from ragged import CASES, grads
from ragged import batch as ragged_batch
from hybridpo.forward import layout
from hybridpo.forward import prompts as prompt_cache
from hybridpo.forward import packing_unsupported_reason, response_logps
from hybridpo.forward import prompt_pass, prompt_pass_unsupported_reason

PREFILL = {"mixed": "packed_prompt_kv", "pairs": "forward_prompts"}


def batch(case, seed=1):
    return ragged_batch(case, VOCAB, seed)


def assert_same(fast, padded, model_grads):
    assert torch.equal(fast.mask, padded.mask)
    assert_close(fast.tok_logps, padded.tok_logps, atol=1e-5, rtol=0)
    assert_close(fast.logps, padded.logps, atol=1e-5, rtol=1e-6)
    g_fast, g_padded = model_grads
    assert g_fast.keys() == g_padded.keys() and g_fast
    for name in g_fast:
        assert_grad_close(g_fast[name], g_padded[name], name)


def assert_grad_close(fast, padded, name):
    """1e-5 of the tensor's largest entry: these sharp random models have gradients up to ~100
    (fp32 rounding then reaches ~2e-4 absolute); in float64 the paths agree to 1e-9 (below)."""
    scale = max(1.0, padded.abs().max().item())
    assert_close(fast, padded, atol=1e-5 * scale, rtol=0, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("family", FAMILIES)
def test_packed_equals_padded(family, case):
    model = family_model(family).train()  # no dropout in these configs
    assert packing_unsupported_reason(model) is None
    prompts, responses = batch(case)
    packed = response_logps(model, prompts, responses, pad_id=PAD, layout="packed", temperature=0.7)
    g_packed = grads(model, packed)
    padded = response_logps(model, prompts, responses, pad_id=PAD, layout="padded", temperature=0.7)
    assert_same(packed, padded, (g_packed, grads(model, padded)))


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_packed_equals_padded_under_eager_attention(family):
    model = family_model(family, attn="eager").train()
    prompts, responses = batch("mixed")
    packed = response_logps(model, prompts, responses, pad_id=PAD, layout="packed")
    g_packed = grads(model, packed)
    padded = response_logps(model, prompts, responses, pad_id=PAD, layout="padded")
    assert_same(packed, padded, (g_packed, grads(model, padded)))


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("family", SHARED)
def test_after_prompt_pass_equals_padded(family, case, monkeypatch):
    """Both prefill branches; the gradient flows through the cached keys / values and last logits."""
    model = family_model(family).train()
    prompts, responses = batch(case)
    calls = []
    packed, left = prompt_cache._packed_prefill, layout.left_padded  # the two prefill branches
    monkeypatch.setattr(prompt_cache, "_packed_prefill", lambda *a: calls.append("packed_prompt_kv") or packed(*a))
    monkeypatch.setattr(layout, "left_padded", lambda *a: calls.append("forward_prompts") or left(*a))
    pp = prompt_pass(model, prompts, pad_id=PAD, attention="masked")  # the rows' branches (spans: tests/fast)
    assert calls == [PREFILL[case]]
    shared = response_logps(model, prompts, responses, pad_id=PAD, prompt_pass=pp, temperature=0.7)
    g_shared = grads(model, shared)
    padded = response_logps(model, prompts, responses, pad_id=PAD, layout="padded", temperature=0.7)
    assert_same(shared, padded, (g_shared, grads(model, padded)))


@pytest.mark.parametrize("family", ["mistral", "mistral_window"])
def test_sliding_window_refuses_the_prompt_pass_and_says_why(family):
    """transformers caches sliding-window layers truncated (DynamicSlidingWindowLayer), not as the
    plain keys / values a prompt pass hands on; the loop then takes the packed layout (exact, above)."""
    model = family_model(family)
    assert "sliding-window" in prompt_pass_unsupported_reason(model)
    with pytest.raises(ValueError, match="sliding-window"):
        prompt_pass(model, [[2, 3, 4]], pad_id=PAD)


def test_the_window_is_what_makes_mistral_window_differ():
    """Guard on the test itself: on these cases the window of 6 changes the numbers (so the packed
    test above would catch a mask without it)."""
    windowed, full = family_model("mistral_window"), family_model("mistral")
    prompts, responses = batch("mixed")
    a = response_logps(windowed, prompts, responses, pad_id=PAD, layout="padded").logps
    b = response_logps(full, prompts, responses, pad_id=PAD, layout="padded").logps
    assert (a - b).abs().max() > 0.1


@pytest.mark.parametrize("family", FAMILIES)
def test_packed_and_prompt_pass_are_exact_in_float64(family, monkeypatch):
    """With the body AND the head in float64, the fast paths agree with the padded one to 1e-9:
    what differs in fp32 is rounding, not a mask, position or cache error. Two fp32 casts are
    patched out for this: the library's logits (`scaled_logits`) and Llama-family RMSNorm, which
    normalises in fp32 whatever the model's dtype (with it, float64 gradients still differ at fp32
    rounding, ~5e-6 on embeddings of size ~90)."""
    from hybridpo.forward import logprobs

    monkeypatch.setattr(logprobs, "scaled_logits", lambda logits, t: logits / t)
    model = family_model(family).double().train()
    for module in model.modules():
        if type(module).__name__.endswith("RMSNorm"):
            module.forward = lambda x, m=module: m.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + m.variance_epsilon))
    prompts, responses = batch("mixed")
    padded = response_logps(model, prompts, responses, pad_id=PAD, layout="padded", temperature=0.7)
    g_padded = grads(model, padded)
    fast = [response_logps(model, prompts, responses, pad_id=PAD, layout="packed", temperature=0.7)]
    if prompt_pass_unsupported_reason(model) is None:
        pp = prompt_pass(model, prompts, pad_id=PAD)
        fast.append(response_logps(model, prompts, responses, pad_id=PAD, prompt_pass=pp, temperature=0.7))
    for result in fast:
        g = grads(model, result)
        assert_close(result.tok_logps, padded.tok_logps, atol=1e-9, rtol=0)
        for name in g:
            assert_close(g[name], g_padded[name], atol=1e-9, rtol=1e-9, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("family", FAMILIES)
def test_packed_applies_the_head_only_where_a_response_token_follows(family):
    """No silent fallback to a full-width head: through the model's own forward (a boolean
    `logits_to_keep`), the LM head sees exactly one position per response token, less the last
    prompt position its responses share."""
    model = family_model(family)
    prompts, responses = batch("mixed")
    seen = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, args, out: seen.append(args[0].shape[:-1]))
    try:
        with torch.no_grad():
            response_logps(model, prompts, responses, pad_id=PAD, layout="packed")
    finally:
        hook.remove()
    tokens = sum(len(r) for rs in responses for r in rs)
    shared = sum(len(rs) - 1 for rs in responses if rs)  # responses of a prompt share its last position
    assert seen == [torch.Size([tokens - shared])]
