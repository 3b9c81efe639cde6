"""The Sampler seam: the built-in sampler and transformers' generate pass the same tests.

Each sampler is called as `Policy.sample` calls it. For both: the log-probs returned are the
scorer's (`response_logps` of the same samples, 1e-5), nothing follows an EOS and the EOS is
counted, the same seed gives the same samples, and with per-example seeds a prompt's samples do not
depend on the other prompts of the call (what makes one process with batch 4 draw what two
processes with batch 2 draw). Comparisons of samples are within one sampler on one machine.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close
from transformers import PreTrainedTokenizerFast

from hybridpo.forward import response_logps
from hybridpo.losses import sequence_kl
from hybridpo.models import BuiltinSampler, Policy
from hybridpo.sampling import GenerateSampler, mix, row_uniforms
from tiny_models import tiny_model

EOS, PAD = 0, 1
TOKENIZER = Path(__file__).resolve().parents[3] / "shared" / "tokenizers" / "pythia" / "tokenizer.json"
PROMPTS = [[5, 17, 42, 8, 9], [71], [3, 60, 22, 22, 14, 90, 33, 2, 40]]  # different lengths
SAMPLERS = {"builtin": BuiltinSampler, "generate": GenerateSampler}


@pytest.fixture(params=sorted(SAMPLERS))
def sampler(request):
    return SAMPLERS[request.param]()


def draw(sampler, model, prompts, k, *, seed=0, seeds=None, **kw):
    kw = dict(max_new_tokens=10, temperature=1.0) | kw
    policy = Policy(model, PAD, EOS, generator=torch.Generator().manual_seed(seed), sampler=sampler)
    return policy.sample(prompts, k, seeds=seeds, **kw)


OPTIONS = [dict(temperature=0.7), dict(temperature=1.0, top_k=5), dict(temperature=0.9, top_p=0.8)]


@pytest.mark.parametrize("options", OPTIONS)
def test_logps_are_the_scorers_and_the_kl_of_pi_to_itself_is_zero(sampler, options):
    model = tiny_model()
    ref = copy.deepcopy(model)
    tau = options["temperature"]
    r = draw(sampler, model, PROMPTS, 4, seed=1, **options)
    assert r.finished.any() and not r.finished.all()  # both kinds of sample are covered
    with torch.no_grad():
        policy = response_logps(model, PROMPTS, r.responses, pad_id=PAD, temperature=tau)
        reference = response_logps(ref, PROMPTS, r.responses, pad_id=PAD, temperature=tau)
    assert_close(policy.by_prompt(), r.logps, atol=1e-5, rtol=0)
    assert_close(sequence_kl(r.logps, reference.by_prompt()), torch.zeros(len(PROMPTS)), atol=1e-5, rtol=0)
    truncated = "top_k" in options or "top_p" in options
    assert (r.sampler_logps > r.logps).any() == truncated  # a narrower sampler gives its tokens more mass
    assert (r.sampler_logps >= r.logps - 1e-5).all()


def test_top_k_samples_only_top_tokens_and_reports_both_logps(sampler):
    model, tau = tiny_model(), 0.8
    r = draw(sampler, model, PROMPTS, 3, seed=4, max_new_tokens=8, temperature=tau, top_k=2)
    for i, p in enumerate(PROMPTS):
        for j, y in enumerate(r.responses[i]):
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([p + y])).logits[0, len(p) - 1 : -1] / tau  # (n, V)
            top2 = logits.topk(2, dim=-1)
            assert all(t in row for t, row in zip(y, top2.indices.tolist()))
            picked = logits.gather(-1, torch.tensor(y)[:, None]).squeeze(-1)
            assert_close(r.logps[i, j], (picked - logits.logsumexp(-1)).sum(), atol=1e-5, rtol=0)
            assert_close(r.sampler_logps[i, j], (picked - top2.values.logsumexp(-1)).sum(), atol=1e-5, rtol=0)


def test_eos_stops_and_everything_after_is_masked(sampler):
    """Vocab {EOS, PAD, 2, 3}: EOS is frequent, so both finished and cut-off samples occur."""
    model, max_new = tiny_model(vocab=4, init=0.5), 6
    prompts = [[2, 3, 2], [3], [2, 2, 3, 3, 2]]
    r = draw(sampler, model, prompts, 16, seed=2, max_new_tokens=max_new)
    assert r.finished.any() and not r.finished.all()
    for i, rs in enumerate(r.responses):
        for j, y in enumerate(rs):
            n = len(y)
            assert r.lengths[i, j] == n and 1 <= n <= max_new
            assert EOS not in y[:-1]  # nothing after the first EOS
            assert r.finished[i, j] == r.eos[i, j] == (y[-1] == EOS)  # the EOS is kept and counted
            if not r.finished[i, j]:
                assert n == max_new  # only max_new_tokens cuts a sample short
            assert r.tokens[i, j, :n].tolist() == y
            assert (r.tokens[i, j, n:] == PAD).all() and (r.tok_logps[i, j, n:] == 0).all()
            assert r.mask[i, j].tolist() == [t < n for t in range(r.tokens.shape[-1])]
    assert_close(r.logps, r.tok_logps.sum(-1))
    assert_close(r.sampler_logps, r.logps, atol=1e-6, rtol=0)  # no truncation: the sampler is π_τ itself
    rescored = response_logps(model, prompts, r.responses, pad_id=PAD)
    assert_close(rescored.by_prompt(), r.logps, atol=1e-5, rtol=0)


def test_same_seed_same_samples_other_seed_other_samples(sampler):
    model = tiny_model()
    a, b = draw(sampler, model, PROMPTS, 4, seed=7), draw(sampler, model, PROMPTS, 4, seed=7)
    assert a.responses == b.responses and torch.equal(a.logps, b.logps)
    c = draw(sampler, model, PROMPTS, 4, seed=8)
    assert c.responses != a.responses
    seeds = [11, 12, 13]
    d, e = draw(sampler, model, PROMPTS, 4, seeds=seeds), draw(sampler, model, PROMPTS, 4, seed=99, seeds=seeds)
    assert d.responses == e.responses  # per-example seeds: the policy's generator plays no part
    assert draw(sampler, model, PROMPTS, 4, seeds=[11, 12, 14]).responses[:2] == d.responses[:2]


def test_per_example_seeds_a_prompt_draws_the_same_samples_in_any_batch(sampler):
    """One process with the 3 prompts, or a split [0, 1] + [2] as two processes would get it, or
    the prompts reordered: prompt i always gets the samples of seeds[i]."""
    model, seeds = tiny_model(), [mix(0, 0, i) for i in range(3)]
    whole = draw(sampler, model, PROMPTS, 4, seeds=seeds)
    first = draw(sampler, model, PROMPTS[:2], 4, seeds=seeds[:2])
    second = draw(sampler, model, PROMPTS[2:], 4, seeds=seeds[2:])
    assert first.responses + second.responses == whole.responses
    order = [2, 0, 1]
    shuffled = draw(sampler, model, [PROMPTS[i] for i in order], 4, seeds=[seeds[i] for i in order])
    assert shuffled.responses == [whole.responses[i] for i in order]
    assert_close(torch.cat([first.logps, second.logps]), whole.logps, atol=1e-5, rtol=0)
    assert len({tuple(y) for rs in whole.responses for y in rs}) > 4  # the k samples of a prompt differ


def test_per_example_seeds_with_the_policys_prompt_pass(sampler):
    """A method hands the sampler its prompt pass; the samples are those of a call without one."""
    model, seeds = tiny_model(), [3, 4, 5]
    policy = Policy(model, PAD, EOS, sampler=sampler)
    with torch.no_grad():
        pp = policy.prompt_pass(PROMPTS)
    assert pp is not None
    with_pass = policy.sample(PROMPTS, 3, prompt_pass=pp, seeds=seeds, max_new_tokens=8)
    without = policy.sample(PROMPTS, 3, seeds=seeds, max_new_tokens=8)
    assert with_pass.responses == without.responses


def test_seeded_block_gives_the_seeds_to_draws_inside_and_checks_their_number(sampler):
    model = tiny_model()
    policy = Policy(model, PAD, EOS, generator=torch.Generator().manual_seed(0), sampler=sampler)
    with policy.seeded([21, 22, 23]):
        inside = policy.sample(PROMPTS, 2, max_new_tokens=6)
        with pytest.raises(ValueError, match="3 sampling seeds for 2 prompts"):
            policy.sample(PROMPTS[:2], 2, max_new_tokens=6)
    assert inside.responses == policy.sample(PROMPTS, 2, seeds=[21, 22, 23], max_new_tokens=6).responses
    assert policy._seeds is None  # the block gave them back


@pytest.mark.skipif(not TOKENIZER.exists(), reason=f"shared tokenizer missing at {TOKENIZER}")
def test_stop_string_cuts_after_the_token_that_completes_it(sampler):
    tok = PreTrainedTokenizerFast(tokenizer_file=str(TOKENIZER), eos_token="<|endoftext|>", pad_token="<|padding|>")
    model = tiny_model(vocab=50304, init=0.02)  # near-uniform: long, varied text, rarely EOS
    prompts = [tok.encode("TITLE: a test post\nTL;DR:"), tok.encode("Hello world")]
    policy = Policy(model, PAD, EOS, tokenizer=tok, sampler=sampler)
    free = policy.sample(prompts, 2, seeds=[5, 6], max_new_tokens=10)
    ids = free.responses[0][1]
    stop = tok.decode(ids[4:6])
    assert stop and stop in tok.decode(ids)
    cut = policy.sample(prompts, 2, seeds=[5, 6], max_new_tokens=10, stop_strings=[stop])
    n = next(n for n in range(1, len(ids) + 1) if stop in tok.decode(ids[:n]))  # the shortest prefix holding it
    assert cut.responses[0][1] == ids[:n]
    assert cut.finished[0, 1] and not cut.eos[0, 1] and cut.lengths[0, 1] == n
    assert_close(cut.logps[0, 1], free.tok_logps[0, 1, :n].sum())
    rescored = response_logps(model, prompts, cut.responses, pad_id=PAD)
    assert_close(rescored.by_prompt(), cut.logps, atol=1e-5, rtol=1e-6)


def test_row_uniforms_depend_on_the_seed_and_sample_index_only():
    u = row_uniforms([4, 9], 3, 5)  # (2 * 3, 5)
    assert u.shape == (6, 5) and ((u >= 0) & (u < 1)).all()
    assert torch.equal(row_uniforms([9], 3, 5), u[3:])  # prompt 1's rows alone
    assert torch.equal(row_uniforms([4, 9], 3, 8)[:, :5], u)  # more steps extend each row's stream
    assert len({tuple(r) for r in u.tolist()}) == 6
    assert mix(0, 0, 1) != mix(0, 1, 0) != mix(1, 0, 0)  # the keys' order matters
