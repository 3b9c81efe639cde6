"""Attention span by span on one unpadded row (hybridpo.fast.varlen_attention): the packed layout,
the prompt pass and the responses after it give the padded reference's log-probs AND parameter
gradients (1e-5, fp32) on every family it serves; it refuses what it cannot serve, loudly.

Models: hybridpo.zoo's random configs at width 32 (as tests/families), init std 0.3 (attention
sharp, so a wrong key set shows) and norm scales / biases made non-trivial; grouped-query
attention on the Llama family (4 query heads over 2 key / value heads).
"""

import pytest
import torch
from torch.testing import assert_close

from hybridpo import zoo
from hybridpo.fast import attention_for
from hybridpo.fast import varlen_attention as va
from hybridpo.forward import prefill, prompt_pass, response_logps
from ragged import CASES, grads
from ragged import batch as ragged_batch

VOCAB, PAD = 97, 1
ARCHS = ("gpt-neox", "llama", "qwen2", "mistral")


def batch(case, seed=1):
    return ragged_batch(case, VOCAB, seed)


def model_of(arch: str, **config):
    extra = {"sliding_window": None} if arch == "mistral" else {}  # v0.2+: no window (a window is refused, below)
    if arch != "gpt-neox":
        extra["num_key_value_heads"] = 2
    extra = {"hidden_size": 32, "intermediate_size": 64, **extra, **config}
    model = zoo.random_model(arch, "tiny", VOCAB, seed=0, initializer_range=0.3, max_position_embeddings=256,
                             pad_token_id=PAD, **extra)
    g = torch.Generator().manual_seed(1000)
    with torch.no_grad():  # norm scales 1 + N(0, 0.3²), biases N(0, 0.2²): a misplaced one shows
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
    return model.train()


LOGP_ULPS = 16 * torch.finfo(torch.float32).eps  # 1.9e-6: a few fp32 ulps of the logit and of the logsumexp each


def assert_same(fast, padded, g_fast, g_padded):
    """Token log-probs to 1e-5, plus 16 fp32 ulps of their size where they are larger than a few nats
    (a log-prob of -12 is logit - logsumexp, each ~12 and rounded at ~1e-6, after sums over the
    hidden width in another order: oneDNN's AVX2 products on an AMD Zen 2 put one such token 1.7e-5
    from the padded path, 1.4e-6 of its size); each parameter's gradient to 1e-5 of its norm.
    (Elementwise, fp32 rounding of these gradients, up to ~9 in size, reaches 1e-4 on the masked
    rows and the padded reference alike; by norm every path is within ~3e-6, measured.)"""
    assert_close(fast.tok_logps, padded.tok_logps, atol=1e-5, rtol=LOGP_ULPS)
    assert torch.equal(fast.mask, padded.mask)
    assert g_fast.keys() == g_padded.keys() and g_fast
    for name in g_padded:
        error = float((g_fast[name] - g_padded[name]).norm() / g_padded[name].norm().clamp(min=1e-30))
        assert error < 1e-5, f"{name}: relative gradient error {error:.1e}"


def test_packed_row_by_hand():
    # prompt A (2 tokens) with responses of 2 and 1; prompt B (1 token) with a response of 2
    row = va.packed_row([[5, 6], [7]], [[[8, 9], [10]], [[11, 12]]])
    assert row.input_ids.tolist() == [[5, 6, 8, 9, 10, 7, 11, 12]]
    assert row.position_ids.tolist() == [[0, 1, 2, 3, 2, 0, 1, 2]]
    spans = [(s.q0, s.q1, s.keys, s.prefix) for s in row.plan.spans]
    assert spans == [(0, 2, ((0, 2),), 0), (2, 4, ((0, 4),), 2), (4, 5, ((0, 2), (4, 5)), 2),
                     (5, 6, ((5, 6),), 0), (6, 8, ((5, 8),), 1)]
    # head at A's last prompt token (predicts both first tokens), 8 (predicts 9), B's last, 11 (predicts 12)
    assert row.needs_head.tolist() == [[False, True, True, False, False, True, True, False]]
    assert row.target_head.tolist() == [0, 1, 0, 2, 3]  # tokens 8, 9, 10, 11, 12
    mask = row.plan.mask(row.plan.spans[1], torch.zeros(1))  # response of 2 after a prompt of 2
    assert (mask[0, 0] == 0).tolist() == [[True, True, True, False], [True, True, True, True]]


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("arch", ARCHS)
def test_packed_spans_equal_padded_values_and_gradients(arch, case):
    model = model_of(arch)
    assert attention_for(model) == "spans"
    prompts, responses = batch(case)
    fast = response_logps(model, prompts, responses, pad_id=PAD, attention="spans")
    g_fast = grads(model, fast)
    padded = response_logps(model, prompts, responses, pad_id=PAD, layout="padded")
    assert_same(fast, padded, g_fast, grads(model, padded))


@pytest.mark.parametrize("arch", ARCHS)
def test_prompt_pass_and_responses_after_it_equal_padded(arch):
    """The gradient flows through the flat pass's keys / values and the prompts' last logits."""
    model = model_of(arch)
    prompts, responses = batch("mixed")
    pp = prompt_pass(model, prompts, pad_id=PAD, attention="spans")
    assert pp.flat_kv is not None and pp.flat_start == [0, 5, 6, 15]
    shared = response_logps(model, prompts, responses, pad_id=PAD, prompt_pass=pp, temperature=0.7, attention="spans")
    g_shared = grads(model, shared)
    padded = response_logps(model, prompts, responses, pad_id=PAD, layout="padded", temperature=0.7)
    assert_same(shared, padded, g_shared, grads(model, padded))


@pytest.mark.parametrize("arch", ["gpt-neox", "llama"])
def test_spans_prefill_equals_a_left_padded_one(arch):
    """What the sampler reads: left-padded keys / values and last logits, equal on real tokens."""
    model = model_of(arch).eval()
    prompts, _ = batch("mixed")
    with torch.no_grad():
        kv, last, attn = prefill(model, prompts, PAD, how="spans")
        kv_ref, last_ref, attn_ref = prefill(model, prompts, PAD, how="left_padded")
    assert torch.equal(attn, attn_ref)
    assert_close(last, last_ref, atol=1e-5, rtol=0)
    real = attn.bool()[:, None, :, None]
    for (k, v), (k_ref, v_ref) in zip(kv, kv_ref):
        assert_close(k * real, k_ref * real, atol=1e-5, rtol=0)
        assert_close(v * real, v_ref * real, atol=1e-5, rtol=0)


def test_frozen_trunk_reference_under_spans_equals_a_copy():
    """The frozen-trunk reference's copied blocks hold their own config copies: they too must take
    the per-span path (the policy's forward's trunk states are reused)."""
    import copy

    from hybridpo.config import ModelConfig
    from hybridpo.models import build_reference
    from hybridpo.models.load import train_last_n_layers

    model = model_of("llama")
    twin = copy.deepcopy(model).eval()
    train_last_n_layers(model, 1)
    ref = build_reference(model, ModelConfig(finetune="last_n_layers", last_n_layers=1), pad_id=PAD)
    prompts, responses = batch("mixed")
    response_logps(model, prompts, responses, pad_id=PAD, attention="spans")  # the policy's forward first
    got = ref.logps(prompts, responses)
    assert ref.model.trunk_runs == 0  # the trunk's states were reused
    want = response_logps(twin, prompts, responses, pad_id=PAD, layout="padded")
    assert_close(got.tok_logps, want.tok_logps, atol=1e-5, rtol=0)


def test_a_layer_outside_the_plan_fails_loudly():
    model = model_of("llama")
    ids = torch.tensor([[3, 4, 5]])
    with pytest.raises(RuntimeError):  # the marker mask cannot be applied to (3, 3) scores
        model(input_ids=ids, attention_mask=va.marker_mask(3, 3, torch.float32, "cpu"))
    with pytest.raises(RuntimeError, match="planned for 4 queries"), va.spans(model, va.Plan(4, 4, [])):
        model(input_ids=ids, attention_mask=va.marker_mask(3, 3, torch.float32, "cpu"))
    assert model.config._attn_implementation == "sdpa"  # switched back


def test_unsupported_models_take_the_masked_rows_and_say_why():
    windowed = zoo.random_model("mistral", "tiny", VOCAB)  # sliding_window 4096
    assert attention_for(windowed) == "masked"
    with pytest.raises(ValueError, match="sliding"):
        attention_for(windowed, "spans")
    with pytest.raises(ValueError, match="choose from"):
        attention_for(windowed, "fast")
    assert attention_for(model_of("llama"), "masked") == "masked"
