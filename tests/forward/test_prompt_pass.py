"""prompt_pass: one forward of the prompts serves the sampler and the loss.

response_logps(prompt_pass=pp) forwards only the responses after the cached prompt keys / values:
its log-probs AND gradients (which now flow through the cached keys / values and the prompt's last
logits) equal the plain padded computation's; rollout.sample(prompt_pass=pp) draws exactly what a
sampler running its own prefill draws from the same generator state; and where sharing the pass
would change the numbers (dropout in training mode), it is refused with the reason.
"""

import pytest
import torch
from torch.testing import assert_close

from hybridpo.forward import PackingUnsupported, hf, prefill, prompt_pass, prompt_pass_unsupported_reason, response_logps
from hybridpo.forward.layout import after_prompt_attention_mask
from hybridpo.rollout import sample
from replay import replaying
from tiny_models import tiny_model

PAD, EOS = 1, 0


def ids(g, n):
    return torch.randint(2, 97, (n,), generator=g).tolist()


def batch(prompt_lens, response_lens, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [ids(g, n) for n in prompt_lens], [[ids(g, n) for n in ns] for ns in response_lens]


CASES = {
    # prompts of different lengths (so left padding matters), a 1-token prompt, 1-token and empty responses
    "mixed": ((5, 1, 9), ((3, 7), (1,), (4, 2, 0, 6))),
    "pairs_plus_k2": ((12, 6), ((5, 3, 4, 4), (7, 7, 1, 3))),
    "all_one_token": ((3, 4), ((1, 1), (1,))),
}


def grads(model, loss):
    model.zero_grad()
    loss.backward()
    return [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("head", ["model_forward", "decoder_and_head"])
def test_after_prompt_pass_equals_padded_values_and_gradients(attn, case, head, monkeypatch):
    if head == "decoder_and_head":
        monkeypatch.setattr(hf, "head_selects_positions", lambda inner: False)
    model = tiny_model(attn=attn).train()  # the config has no dropout, so training mode is allowed
    prompts, responses = batch(*CASES[case])
    pp = prompt_pass(model, prompts, pad_id=PAD)
    shared = response_logps(model, prompts, responses, pad_id=PAD, prompt_pass=pp, temperature=0.7)
    padded = response_logps(model, prompts, responses, pad_id=PAD, layout="padded", temperature=0.7)
    assert_close(shared.tok_logps, padded.tok_logps, atol=1e-5, rtol=0)
    assert torch.equal(shared.mask, padded.mask)
    w = torch.linspace(-1.0, 2.0, len(shared.logps))  # every response's gradient matters
    for gs, gp in zip(grads(model, (w * shared.logps).sum()), grads(model, (w * padded.logps).sum())):
        assert_close(gs, gp, atol=1e-5, rtol=1e-4)


def test_packed_prompt_pass_equals_a_left_padded_prefill():
    """The prompt pass runs the prompts packed (several per row, no padding computed), then gathers
    keys / values into the left-padded layout: on real tokens they equal a left-padded forward's."""
    model = tiny_model()
    prompts = [[5, 9, 13, 2, 7, 30, 41, 3], [11, 3], [8, 8, 20], [4], [6, 6, 6, 6, 6]]
    with torch.no_grad():
        kv, last, attn = prefill(model, prompts, PAD, how="packed")
        kv_padded, last_padded, attn_padded = prefill(model, prompts, PAD, how="left_padded")
    assert torch.equal(attn, attn_padded)
    assert_close(last, last_padded, atol=1e-5, rtol=0)
    real = attn.bool()[:, None, :, None]  # (P, 1, W, 1)
    for (keys, values), (keys_padded, values_padded) in zip(kv, kv_padded):
        assert keys.shape == keys_padded.shape
        assert_close(keys * real, keys_padded * real, atol=1e-5, rtol=0)
        assert_close(values * real, values_padded * real, atol=1e-5, rtol=0)


def test_one_prompt_pass_serves_two_scorings():
    """HyPO at τ ≠ 1 scores pairs and samples separately: the cached keys / values must survive."""
    model = tiny_model()
    prompts, responses = batch(*CASES["pairs_plus_k2"])
    pp = prompt_pass(model, prompts, pad_id=PAD)
    first = response_logps(model, prompts, [rs[:2] for rs in responses], pad_id=PAD, prompt_pass=pp)
    second = response_logps(model, prompts, [rs[2:] for rs in responses], pad_id=PAD, prompt_pass=pp)
    padded = response_logps(model, prompts, responses, pad_id=PAD, layout="padded").logps.view(2, 4)
    assert_close(torch.cat([first.logps.view(2, 2), second.logps.view(2, 2)], 1), padded, atol=1e-5, rtol=0)


def test_sampling_from_a_prompt_pass_draws_what_its_own_prefill_draws(monkeypatch):
    """On the same samples (tests/replay.py: the draw replays the sampler's own), the prompt pass
    seeds the decode with the keys / values and logits of the sampler's own prefill."""
    model = tiny_model(vocab=8, init=0.5)
    prompts = [[2, 3, 4, 5], [6], [7, 2, 2]]
    kwargs = dict(max_new_tokens=7, eos_id=EOS, pad_id=PAD, temperature=0.9)
    alone = sample(model, prompts, 4, generator=torch.Generator().manual_seed(3), **kwargs)
    with torch.no_grad():
        pp = prompt_pass(model, prompts, pad_id=PAD)
    replaying(monkeypatch, alone)
    shared = sample(model, prompts, 4, generator=torch.Generator().manual_seed(3), prompt_pass=pp, **kwargs)
    assert shared.responses == alone.responses
    assert_close(shared.logps, alone.logps, atol=1e-6, rtol=0)
    assert alone.finished.any() and not alone.finished.all()  # rows left the batch on both sides


def test_mask_by_hand():
    """Prompt widths 3 (row 0: one left pad) / responses [2 tokens, 1 token, pad] in row 0."""
    segment = torch.tensor([[1, 1, 2, -1]])
    prompt_attn = torch.tensor([[0, 1, 1]])
    allowed = after_prompt_attention_mask(segment, prompt_attn, torch.float32)[0, 0] == 0
    expected = torch.tensor([
        # pad p1 p2 | r1a r1b r2 pad
        [0, 1, 1, 1, 0, 0, 0],  # r1a: the prompt and itself
        [0, 1, 1, 1, 1, 0, 0],  # r1b: the prompt, r1a and itself
        [0, 1, 1, 0, 0, 1, 0],  # r2: the prompt and itself, never response 1
        [0, 0, 0, 0, 0, 0, 1],  # padding query: only itself
    ], dtype=torch.bool)
    assert torch.equal(allowed, expected)


def test_refused_where_sharing_would_change_the_numbers():
    model = tiny_model()
    model.config.attention_dropout = 0.1
    model.train()
    assert "dropout" in prompt_pass_unsupported_reason(model)
    with pytest.raises(PackingUnsupported, match="attention_dropout"):
        prompt_pass(model, [[2, 3]], pad_id=PAD)
    model.eval()  # no dropout in eval mode: allowed
    assert prompt_pass_unsupported_reason(model) is None
    flash = tiny_model()
    flash.config._attn_implementation = "flash_attention_2"
    assert "4D mask" in prompt_pass_unsupported_reason(flash)


def test_prompts_must_match():
    model = tiny_model()
    pp = prompt_pass(model, [[2, 3]], pad_id=PAD)
    with pytest.raises(ValueError, match="other prompts"):
        response_logps(model, [[2, 4]], [[[5]]], pad_id=PAD, prompt_pass=pp)
