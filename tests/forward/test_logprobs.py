"""response_logps: the packed shared-prompt layout equals the plain padded one, and both equal
log-softmax of the logits a single unbatched forward gives at the prompt/response boundary."""

import itertools
import math

import pytest
import torch
from torch.testing import assert_close

from hybridpo.forward import PackingUnsupported, hf, layout, packing_unsupported_reason, response_logps
from hybridpo.forward.layout import packed_attention_mask
from tiny_models import tiny_model

PAD = 1



def rand_ids(g, n, vocab=97):
    return torch.randint(2, vocab, (n,), generator=g).tolist()


def batch(prompt_lens, response_lens, seed=1):
    g = torch.Generator().manual_seed(seed)
    prompts = [rand_ids(g, n) for n in prompt_lens]
    responses = [[rand_ids(g, n) for n in ns] for ns in response_lens]
    return prompts, responses


def grads(model, loss):
    model.zero_grad()
    loss.backward()
    return [p.grad.clone() for p in model.parameters()]


CASES = {
    # varied prompt lengths (incl. a 1-token prompt); a pair, a single response, k=4 with an empty one
    "mixed": ((5, 1, 9), ((3, 7), (1,), (4, 2, 0, 6))),
    "one_response_each": ((4, 8, 2), ((5,), (1,), (9,))),
    "chosen_rejected_plus_k4": ((12, 6), ((5, 3, 4, 4, 2, 6), (7, 7, 1, 3, 3, 5))),
}


@pytest.fixture(params=["model_forward", "decoder_and_head"])
def head_path(request, monkeypatch):
    """The packed layout's two ways to the LM head: the model's forward with a boolean
    logits_to_keep (transformers 5.x), or the decoder then get_output_embeddings() (fallback)."""
    if request.param == "decoder_and_head":
        monkeypatch.setattr(hf, "head_selects_positions", lambda inner: False)
    return request.param


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_packed_equals_padded_values_and_gradients(attn, case, head_path):
    model = tiny_model(attn=attn)
    prompts, responses = batch(*CASES[case])
    packed = response_logps(model, prompts, responses, pad_id=PAD, layout="packed")
    padded = response_logps(model, prompts, responses, pad_id=PAD, layout="padded")
    assert_close(packed.tok_logps, padded.tok_logps, atol=1e-5, rtol=0)
    assert_close(packed.logps, padded.logps, atol=1e-5, rtol=0)
    assert torch.equal(packed.mask, padded.mask)
    assert packed.lengths.tolist() == [len(r) for rs in responses for r in rs]
    # a weighted loss so every response's gradient matters, not only their sum
    w = torch.linspace(-1.0, 2.0, len(packed.logps))
    for gp, gq in zip(grads(model, (w * packed.logps).sum()), grads(model, (w * padded.logps).sum())):
        assert_close(gp, gq, atol=1e-5, rtol=1e-4)


def test_boundary_matches_unbatched_forward_by_hand():
    """Response token t of y after prompt x is log softmax(logits(x + y[:t]))[-1][y_t]: the first
    response token is scored by the logits after the FULL prompt, and a second response of the same
    prompt is scored as if the first did not exist."""
    model = tiny_model()
    prompt, first, second = [5, 17, 42], [8, 3, 60], [71, 9]

    def by_hand(resp):
        out = []
        for t, tok in enumerate(resp):
            ctx = torch.tensor([prompt + resp[:t]])
            out.append(model(input_ids=ctx).logits[0, -1].log_softmax(-1)[tok])
        return torch.stack(out)

    for layout in ("packed", "padded"):
        got = response_logps(model, [prompt], [[first, second]], pad_id=PAD, layout=layout)
        assert_close(got.tok_logps[0, :3], by_hand(first), atol=1e-5, rtol=0)
        assert_close(got.tok_logps[1, :2], by_hand(second), atol=1e-5, rtol=0)
        assert got.tok_logps[1, 2].item() == 0.0 and not got.mask[1, 2]  # zero-padded per response
        assert_close(got.logps, got.tok_logps.sum(-1))


def test_packed_mask_by_hand():
    """Row [p p a a b pad]: prompt p, response a, response b. 1 = may attend."""
    segment = torch.tensor([[0, 0, 1, 1, 2, -1]])
    expected = torch.tensor([
        [1, 0, 0, 0, 0, 0],  # p0: itself
        [1, 1, 0, 0, 0, 0],  # p1: causal prompt
        [1, 1, 1, 0, 0, 0],  # a0: prompt + itself
        [1, 1, 1, 1, 0, 0],  # a1: prompt + a0 + itself
        [1, 1, 0, 0, 1, 0],  # b0: prompt + itself, never a
        [0, 0, 0, 0, 0, 1],  # pad: only itself (never read)
    ], dtype=torch.bool)
    mask = packed_attention_mask(segment, torch.float32)
    assert mask.shape == (1, 1, 6, 6)
    assert torch.equal(mask[0, 0] == 0, expected)
    assert (mask[0, 0][~expected] == torch.finfo(torch.float32).min).all()


def test_plain_causal_packing_would_be_wrong():
    """Sanity of the comparison itself: letting response b see response a changes b's log-probs,
    so the equality above does test the mask."""
    model = tiny_model()
    prompt, a, b = [5, 17, 42], [8, 3, 60], [71, 9]
    right = response_logps(model, [prompt], [[b]], pad_id=PAD, layout="padded").logps
    leaked = response_logps(model, [prompt + a], [[b]], pad_id=PAD, layout="padded").logps
    assert (right - leaked).abs().item() > 1e-3


def test_temperature_scales_logits_before_log_softmax():
    model = tiny_model()
    prompt, resp = [5, 17, 42], [8, 3]
    for tau in (0.5, 0.7, 2.0):
        logits = model(input_ids=torch.tensor([prompt + resp])).logits[0]  # (T, V)
        expected = (logits / tau).log_softmax(-1)[[2, 3], resp]
        for layout in ("packed", "padded"):
            got = response_logps(model, [prompt], [[resp]], pad_id=PAD, temperature=tau, layout=layout)
            assert_close(got.tok_logps[0], expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_sequence_probabilities_sum_to_one(tau):
    """Vocab {EOS=0, 1, 2}, at most 3 tokens: the 7 EOS-ended sequences and the 8 cut at length 3
    are disjoint and cover every outcome, so Σ_y π_τ(y|x) = 1 exactly."""
    model = tiny_model(vocab=3)
    seqs = [list(s) + [0] for n in range(3) for s in itertools.product([1, 2], repeat=n)]
    seqs += [list(s) for s in itertools.product([1, 2], repeat=3)]
    assert len(seqs) == 15
    got = response_logps(model, [[1, 2, 1], [2]], [seqs, seqs], pad_id=0, temperature=tau)
    assert_close(got.by_prompt().exp().sum(-1), torch.ones(2), atol=1e-5, rtol=0)


def test_lora_packed_equals_padded_and_adapter_disables(head_path):
    peft = pytest.importorskip("peft")
    model = tiny_model()
    lora = peft.get_peft_model(
        model, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query_key_value", "dense"])
    )
    for name, p in lora.named_parameters():  # LoRA B starts at zero; make the adapter matter
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.3, generator=torch.Generator().manual_seed(3))
    prompts, responses = batch(*CASES["mixed"])
    packed = response_logps(lora, prompts, responses, pad_id=PAD)
    padded = response_logps(lora, prompts, responses, pad_id=PAD, layout="padded")
    assert_close(packed.logps, padded.logps, atol=1e-5, rtol=0)
    with lora.disable_adapter():
        ref = response_logps(lora, prompts, responses, pad_id=PAD)
    base = response_logps(tiny_model(), prompts, responses, pad_id=PAD, layout="padded")
    assert_close(ref.logps, base.logps, atol=1e-5, rtol=0)
    assert (packed.logps - ref.logps).abs().max() > 1e-3  # the adapter changed the policy


def test_packed_head_is_applied_only_where_a_response_token_follows(monkeypatch):
    """Prompt of 3, responses of 3 and 2 tokens: the head runs on the last prompt position (shared,
    once) plus 2 + 1 response positions = 4 rows, not on all 8 positions."""
    model = tiny_model()
    rows = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, a, out: rows.append(out.shape))
    response_logps(model, [[5, 17, 42]], [[[8, 3, 60], [71, 9]]], pad_id=PAD)
    hook.remove()
    assert rows == [torch.Size([4, 97])]


class Wrapper(torch.nn.Module):
    """Like DistributedDataParallel: holds the model as `.module` and forwards to it."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, **kwargs):
        return self.module(**kwargs)


def test_packed_goes_through_a_ddp_style_wrapper():
    model = tiny_model()
    prompts, responses = batch(*CASES["mixed"])
    wrapped = response_logps(Wrapper(model), prompts, responses, pad_id=PAD)
    padded = response_logps(model, prompts, responses, pad_id=PAD, layout="padded")
    assert_close(wrapped.logps, padded.logps, atol=1e-5, rtol=0)


def test_packed_refuses_ddp_style_wrapper_without_logits_to_keep(monkeypatch):
    monkeypatch.setattr(hf, "head_selects_positions", lambda inner: False)
    assert "forward would be bypassed" in packing_unsupported_reason(Wrapper(tiny_model()))


def test_packed_refuses_unsupported_attention_with_a_clear_error():
    model = tiny_model()
    model.config._attn_implementation = "flash_attention_2"
    assert "flash_attention_2" in packing_unsupported_reason(model)
    with pytest.raises(PackingUnsupported, match="layout='padded'"):
        response_logps(model, [[3, 4]], [[[5]]], pad_id=PAD)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(prompts=[[]], responses=[[[5]]]), "prompt 0 is empty"),
        (dict(prompts=[[3]], responses=[[[5]], [[6]]]), "1 prompts but responses for 2"),
        (dict(prompts=[[3]], responses=[[[5]]], temperature=0.0), "temperature must be > 0"),
        (dict(prompts=[[3]], responses=[[[5]]], layout="dense"), "layout='dense'"),
    ],
)
def test_bad_input_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        response_logps(tiny_model(), pad_id=PAD, **kwargs)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_bf16_model_gives_fp32_logps_and_packed_still_matches_padded(attn):
    """The mask takes the model's dtype (its minimum as -inf) and log-softmax runs in fp32."""
    model = tiny_model(attn=attn).to(torch.bfloat16)
    prompts, responses = batch(*CASES["mixed"])
    packed = response_logps(model, prompts, responses, pad_id=PAD)
    padded = response_logps(model, prompts, responses, pad_id=PAD, layout="padded")
    assert packed.logps.dtype == torch.float32
    # the two layouts round differently in bf16 (different kernels and row shapes): allow one bf16
    # ulp (2^-8) relative; measured up to 7e-4 relative on these sums of ~40
    assert_close(packed.logps, padded.logps, atol=1e-2, rtol=2**-8)


def test_gradient_flows_only_when_enabled():
    model = tiny_model()
    with torch.no_grad():
        assert not response_logps(model, [[3, 4]], [[[5, 6]]], pad_id=PAD).logps.requires_grad
    out = response_logps(model, [[3, 4]], [[[5, 6]]], pad_id=PAD)
    assert out.logps.requires_grad and out.logps.dtype == torch.float32
    assert math.isfinite(out.logps.item())


def test_short_groups_share_a_row_first_fit_decreasing():
    """Group sizes 15, 2, 21, 6, 19 with rows 21 wide: 21 | 19 + 2 | 15 + 6."""
    assert layout.rows_of([15, 2, 21, 6, 19]) == [[2], [4, 1], [0, 3]]
    packed = layout.pack([[5] * 5, [6], [7] * 9], [[[8] * 3, [9] * 7], [[3]], [[4] * 4, [2] * 2, [], [3] * 6]], PAD)
    assert packed.input_ids.shape == (2, 21)  # the "mixed" case of CASES: 3 groups in 2 rows, equal to padded above
    assert packed.group.tolist()[1] == [0] * 15 + [1] * 2 + [-1] * 4


def test_packed_mask_keeps_groups_in_one_row_apart():
    """Row [p a | q b]: group 0 = prompt p + response a, group 1 = prompt q + response b."""
    segment = torch.tensor([[0, 1, 0, 1]])
    group = torch.tensor([[0, 0, 1, 1]])
    expected = torch.tensor([
        [1, 0, 0, 0],  # p
        [1, 1, 0, 0],  # a: p + itself
        [0, 0, 1, 0],  # q: never group 0
        [0, 0, 1, 1],  # b: q + itself
    ], dtype=torch.bool)
    assert torch.equal(packed_attention_mask(segment, torch.float32, group)[0, 0] == 0, expected)
