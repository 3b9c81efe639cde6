"""The KV-cache sampler on every architecture family: greedy decoding equals transformers'
`generate(do_sample=False)` token for token, prompt by prompt (prompts of different lengths,
batched, k samples each, stopping at EOS), with and without a shared prompt pass; and the
sampler's log-probs equal `response_logps` of the same samples (1e-5, fp32).

Random models rarely emit a fixed EOS, so each test takes as EOS a token that greedy decoding of
the first prompt emits mid-way: some samples then stop early and leave the batch, others run to
max_new_tokens.
"""

import pytest
import torch
from torch.testing import assert_close

from family_models import FAMILIES, PAD, SHARED, VOCAB, family_model
from hybridpo.forward import response_logps
from hybridpo.forward import prompt_pass, prompt_pass_unsupported_reason
from hybridpo.rollout import sample
from replay import MARGIN, greedy_margin

PROMPTS = [[5, 17, 42, 8, 9], [71], [3, 60, 22, 22, 14, 90, 33, 2, 40, 7, 11], [12, 13, 44]]
NEW = 12


def generate_one(model, prompt, eos_id):
    out = model.generate(
        torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        max_new_tokens=NEW, do_sample=False, eos_token_id=eos_id, pad_token_id=PAD,
    )
    ids = out[0, len(prompt):].tolist()
    return ids[: ids.index(eos_id) + 1] if eos_id in ids else ids  # generate pads after EOS


def mid_way_eos(model):
    """A token greedy decoding of prompt 0 emits at step 5 or later (first emitted there), not PAD."""
    ids = generate_one(model, PROMPTS[0], eos_id=VOCAB + 1)  # an id never emitted: no stop
    for t in range(4, len(ids)):
        if ids[t] != PAD and ids[t] not in ids[:t]:
            return ids[t]
    return ids[-1] if ids[-1] != PAD else 0


def prompt_pass_or_none(model, use):
    if not use:
        return None
    assert prompt_pass_unsupported_reason(model) is None
    with torch.no_grad():
        return prompt_pass(model, PROMPTS, pad_id=PAD)


# sliding-window models refuse the prompt pass (test_family_logprobs says why); they sample from
# their own prefill, through transformers' sliding-window cache
CASES = [(f, s) for f in FAMILIES for s in ("own_prefill", "prompt_pass") if s == "own_prefill" or f in SHARED]


@pytest.mark.parametrize(("family", "shared"), CASES)
def test_greedy_equals_generate(family, shared):
    model = family_model(family)
    eos = mid_way_eos(model)
    pp = prompt_pass_or_none(model, shared == "prompt_pass")
    k = 3
    r = sample(model, PROMPTS, k, max_new_tokens=NEW, eos_id=eos, pad_id=PAD, temperature=0.0, prompt_pass=pp)
    assert greedy_margin(model, PROMPTS, r.responses) > MARGIN  # argmax far from a tie: the same on any path and CPU
    stopped = 0
    for i, p in enumerate(PROMPTS):
        expected = generate_one(model, p, eos)
        assert r.responses[i] == [expected] * k, f"prompt {i}"
        assert r.eos[i].tolist() == [expected[-1] == eos] * k
        stopped += expected[-1] == eos
    assert 0 < stopped < len(PROMPTS) or stopped == len(PROMPTS) == 1  # some stop early, some run on
    assert r.eos[0].all() and r.lengths[0, 0] <= NEW


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize(("family", "shared"), CASES)
def test_sampled_logps_equal_scored_logps(family, shared, temperature):
    model = family_model(family)
    eos = mid_way_eos(model)
    pp = prompt_pass_or_none(model, shared == "prompt_pass")
    r = sample(model, PROMPTS, 3, max_new_tokens=NEW, eos_id=eos, pad_id=PAD, temperature=temperature,
               generator=torch.Generator().manual_seed(0), prompt_pass=pp)
    with torch.no_grad():
        for layout in ("padded", "packed"):
            scored = response_logps(model, PROMPTS, r.responses, pad_id=PAD, temperature=temperature, layout=layout)
            L = scored.tok_logps.shape[-1]
            assert torch.equal(scored.mask, r.mask.flatten(0, 1)[:, :L])
            # the sampler's and the scorer's fp32 log-softmax sum in other orders: 1e-5 of the values'
            # size on top of 1e-5 (a token's log-prob of 4.3 differed by 1.0e-5 on an AMD EPYC)
            assert_close(scored.tok_logps, r.tok_logps.flatten(0, 1)[:, :L], atol=1e-5, rtol=1e-5)
            assert_close(scored.logps.view(len(PROMPTS), 3), r.logps, atol=1e-5, rtol=1e-6)
