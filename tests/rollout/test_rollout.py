"""rollout.sample: greedy equals transformers' generate, batching and left padding change nothing,
the prompt is prefilled once, and the sampler's log-probs are exactly the scorer's."""

import copy
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close
from transformers import PreTrainedTokenizerFast

from hybridpo.forward import response_logps
from replay import MARGIN, greedy_margin
from tiny_models import tiny_model
from hybridpo.losses import sequence_kl
from hybridpo.rollout import _truncate, sample

EOS, PAD = 0, 1
TOKENIZER = Path(__file__).resolve().parents[3] / "shared" / "tokenizers" / "pythia" / "tokenizer.json"



PROMPTS = [[5, 17, 42, 8, 9], [71], [3, 60, 22, 22, 14, 90, 33, 2, 40]]  # different lengths


def gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_greedy_equals_generate_one_prompt_at_a_time(attn):
    model = tiny_model(attn=attn)
    batched = sample(model, PROMPTS, 1, max_new_tokens=12, eos_id=EOS, pad_id=PAD, temperature=0.0)
    assert greedy_margin(model, PROMPTS, batched.responses) > MARGIN  # argmax far from a tie: the same on any path and CPU
    for i, p in enumerate(PROMPTS):
        out = model.generate(
            torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
            max_new_tokens=12, do_sample=False, eos_token_id=EOS, pad_token_id=PAD,
        )
        expected = out[0, len(p):].tolist()
        if EOS in expected:  # generate pads after EOS; our response ends at EOS
            expected = expected[: expected.index(EOS) + 1]
        alone = sample(model, [p], 1, max_new_tokens=12, eos_id=EOS, pad_id=PAD, temperature=0.0)
        assert batched.responses[i][0] == expected == alone.responses[0][0]
        assert batched.finished[i, 0].item() == (expected[-1] == EOS)


def test_greedy_k_copies_are_identical():
    model = tiny_model()
    r = sample(model, PROMPTS, 3, max_new_tokens=8, eos_id=EOS, pad_id=PAD, temperature=0.0)
    for rs in r.responses:
        assert rs[0] == rs[1] == rs[2]


@pytest.mark.parametrize("decoder", ["transformers", "neox"])
def test_prompt_is_prefilled_once_then_one_token_per_step(decoder):
    model, P, k, width = tiny_model(), len(PROMPTS), 4, max(len(p) for p in PROMPTS)
    shapes = []
    hook = model.gpt_neox.register_forward_pre_hook(
        lambda mod, args, kwargs: shapes.append(tuple((args[0] if args else kwargs["input_ids"]).shape)),
        with_kwargs=True,
    )
    try:
        r = sample(model, PROMPTS, k, max_new_tokens=6, eos_id=EOS, pad_id=PAD, generator=gen(0), decoder=decoder)
    finally:
        hook.remove()
    steps = r.tokens.shape[-1]
    rows, cols = shapes[0]  # the prefill: each prompt once, not once per sample, packed into rows
    assert cols == width and rows < P and rows * cols >= sum(len(p) for p in PROMPTS)
    if decoder == "neox":  # its decode steps do not go through transformers' forward
        assert len(shapes) == 1 and steps > 1
        return
    # forward i >= 1 feeds token i-1 of the samples still running, i.e. those longer than i;
    # a sample that emitted EOS leaves the batch, and no forward follows the last token
    running = [int((r.lengths > i).sum()) for i in range(1, steps)]
    assert shapes[1:] == [(n, 1) for n in running]
    assert running[0] == P * k and running[-1] < P * k  # finished samples did leave


@pytest.mark.parametrize("layout", ["packed", "padded"])
def test_sampler_logps_equal_scorer_logps_and_kl_of_pi_to_itself_is_zero(layout):
    """At τ = 0.7, response_logps on the samples reproduces Rollout.logps, and
    the sequence KL estimate with π_ref = π (same weights) is exactly zero."""
    model, tau = tiny_model(), 0.7
    ref = copy.deepcopy(model)
    r = sample(model, PROMPTS, 4, max_new_tokens=10, eos_id=EOS, pad_id=PAD, temperature=tau,
               generator=gen(1))
    assert r.finished.any() and not r.finished.all()  # both kinds of sample are covered
    with torch.no_grad():
        policy = response_logps(model, PROMPTS, r.responses, pad_id=PAD, temperature=tau, layout=layout)
        reference = response_logps(ref, PROMPTS, r.responses, pad_id=PAD, temperature=tau, layout=layout)
    assert_close(policy.by_prompt(), r.logps, atol=1e-5, rtol=0)
    assert_close(policy.tok_logps.view(r.tok_logps.shape[:2] + (-1,)), r.tok_logps[..., : policy.tok_logps.shape[-1]],
                 atol=1e-5, rtol=0)
    assert torch.equal(sequence_kl(policy.by_prompt(), reference.by_prompt()), torch.zeros(len(PROMPTS)))
    assert_close(sequence_kl(r.logps, reference.by_prompt()), torch.zeros(len(PROMPTS)), atol=1e-5, rtol=0)
    # the classic bug, for contrast: scoring τ = 0.7 samples at τ = 1 gives a non-zero "KL"
    wrong = response_logps(ref, PROMPTS, r.responses, pad_id=PAD, temperature=1.0, layout=layout)
    assert sequence_kl(r.logps, wrong.by_prompt()).abs().max() > 0.1


def test_lora_policy_samples_and_scores_consistently_and_mode_is_restored():
    peft = pytest.importorskip("peft")
    lora = peft.get_peft_model(tiny_model(), peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query_key_value"]))
    for name, p in lora.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.3, generator=gen(6))
    lora.train()
    r = sample(lora, PROMPTS, 2, max_new_tokens=8, eos_id=EOS, pad_id=PAD, temperature=0.7, generator=gen(7))
    assert lora.training  # sampling ran in eval mode and gave the mode back
    scored = response_logps(lora, PROMPTS, r.responses, pad_id=PAD, temperature=0.7)
    assert_close(scored.by_prompt(), r.logps, atol=1e-5, rtol=0)


def test_truncation_by_hand():
    """Probs (0.5, 0.3, 0.15, 0.05): top-p keeps the smallest prefix holding p of the mass."""
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = lambda **kw: torch.isfinite(_truncate(logits, **kw))[0].tolist()  # noqa: E731
    assert kept(top_k=0, top_p=0.75) == [True, True, False, False]  # 0.5 < 0.75 <= 0.8
    assert kept(top_k=0, top_p=0.85) == [True, True, True, False]  # 0.8 < 0.85 <= 0.95
    assert kept(top_k=0, top_p=0.4) == [True, False, False, False]  # the top token always stays
    assert kept(top_k=3, top_p=1.0) == [True, True, True, False]
    # top-k first, then top-p on the renormalised top-3: 0.5/0.95 < 0.75 <= 0.8/0.95
    assert kept(top_k=3, top_p=0.75) == [True, True, False, False]


def test_top_k_one_and_tiny_top_p_are_greedy():
    model = tiny_model()
    greedy = sample(model, PROMPTS, 1, max_new_tokens=8, eos_id=EOS, pad_id=PAD, temperature=0.0)
    for kw in (dict(top_k=1), dict(top_p=1e-6)):
        r = sample(model, PROMPTS, 2, max_new_tokens=8, eos_id=EOS, pad_id=PAD, generator=gen(3), **kw)
        assert all(rs[0] == rs[1] == g[0] for rs, g in zip(r.responses, greedy.responses))
        assert torch.equal(r.sampler_logps, torch.zeros_like(r.sampler_logps))  # point mass


@pytest.mark.skipif(not TOKENIZER.exists(), reason=f"shared tokenizer missing at {TOKENIZER}")
def test_stop_string_cuts_after_the_token_that_completes_it():
    tok = PreTrainedTokenizerFast(tokenizer_file=str(TOKENIZER), eos_token="<|endoftext|>",
                                  pad_token="<|padding|>")
    model = tiny_model(vocab=50304, init=0.02)  # near-uniform: long, varied text, rarely EOS
    prompts = [tok.encode("TITLE: a test post\nTL;DR:"), tok.encode("Hello world")]
    kw = dict(max_new_tokens=10, eos_id=EOS, pad_id=PAD, temperature=1.0)
    free = sample(model, prompts, 2, generator=gen(5), **kw)
    ids = free.responses[0][1]
    stop = tok.decode(ids[4:6])
    assert stop and stop in tok.decode(ids)
    cut = sample(model, prompts, 2, generator=gen(5), stop_strings=[stop], tokenizer=tok, **kw)
    # expected cut derived independently: the shortest prefix whose text contains the stop string
    n = next(n for n in range(1, len(ids) + 1) if stop in tok.decode(ids[:n]))
    assert n <= 6
    assert cut.responses[0][1] == ids[:n]
    assert cut.finished[0, 1] and not cut.eos[0, 1] and cut.lengths[0, 1] == n
    assert_close(cut.logps[0, 1], free.tok_logps[0, 1, :n].sum())
    assert not cut.mask[0, 1, n:].any()
    for i in range(2):  # samples without the stop string are untouched
        for j in range(2):
            y = free.responses[i][j]
            if stop not in tok.decode(y):
                assert cut.responses[i][j] == y and cut.finished[i, j] == free.finished[i, j]
    rescored = response_logps(model, prompts, cut.responses, pad_id=PAD)
    assert_close(rescored.by_prompt(), cut.logps, atol=1e-5, rtol=1e-6)  # sums of ~100: 1 ulp = 8e-6


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(prompts=[[]]), "prompt 0 is empty"),
        (dict(k=0), "k must be >= 1"),
        (dict(max_new_tokens=0), "max_new_tokens must be >= 1"),
        (dict(temperature=-1.0), "temperature must be >= 0"),
        (dict(top_p=0.0), "top_p must be in"),
        (dict(top_k=-2), "top_k must be >= 0"),
        (dict(stop_strings=["\n"]), "need a tokenizer"),
    ],
)
def test_bad_arguments_errors(kwargs, message):
    args = dict(prompts=[[3, 4]], k=2, max_new_tokens=4) | kwargs
    with pytest.raises(ValueError, match=message):
        sample(tiny_model(), args.pop("prompts"), args.pop("k"), eos_id=EOS, pad_id=PAD, **args)


def test_samples_that_finish_early_leave_the_preallocated_cache_without_changing_the_rest():
    """Rows leave the decode batch at different steps (EOS is frequent in a 4-token vocabulary);
    the log-probs the sampler recorded must still equal a fresh padded forward of every finished
    and unfinished sample (1e-5), i.e. each row kept reading its own keys / values."""
    model = tiny_model(vocab=4, init=0.5)
    prompts = [[2, 3, 2], [3], [2, 2, 3, 3, 2]]
    r = sample(model, prompts, 16, max_new_tokens=9, eos_id=EOS, pad_id=PAD, generator=gen(5))
    assert len(set(r.lengths.flatten().tolist())) >= 4  # rows really left at different steps
    scored = response_logps(model, prompts, r.responses, pad_id=PAD, layout="padded")
    assert_close(scored.by_prompt(), r.logps, atol=1e-5, rtol=0)


def test_inverse_cdf_draws_follow_the_distribution_and_never_a_zero_probability_token():
    """20,000 draws from (0.5, 0.3, 0, 0.15, 0.05, 0): each frequency within 5 binomial standard
    deviations sqrt(p(1-p)/n) of p (a false alarm has probability < 1e-6 per token), and the two
    zero-probability tokens, at the start of a flat CDF stretch and at the end, never appear."""
    from hybridpo.rollout import _inverse_cdf

    n = 20_000
    p = torch.tensor([0.5, 0.3, 0.0, 0.15, 0.05, 0.0])
    draws = _inverse_cdf((3 * p).cumsum(-1).expand(n, -1).contiguous(), gen(0))  # an unnormalised CDF (mass 3)
    freq = torch.bincount(draws, minlength=len(p)).double() / n
    tolerance = 5 * (p.double() * (1 - p.double()) / n).sqrt()
    assert ((freq - p.double()).abs() <= tolerance).all(), freq
    assert freq[2] == 0 and freq[5] == 0


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_draw_follows_softmax_of_the_scaled_logits_and_reports_its_log_probs(temperature):
    """The untruncated sampler (the exp / cumsum path): 20,000 draws from logits whose softmax at
    temperature τ is p = (0.5, 0.3, 0.15, 0.05), each frequency within 5 binomial standard
    deviations of p, and the reported log π_τ and sampler log-prob both equal log p[token]."""
    from hybridpo.rollout import _draw

    n = 20_000
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = (temperature * (p.log() + 4.0)).expand(n, -1)  # softmax(logits / τ) = p; shifted (unnormalised)
    tok, lp, sampler_lp = _draw(logits, temperature, 0, 1.0, gen(1))
    freq = torch.bincount(tok, minlength=len(p)).double() / n
    assert ((freq - p.double()).abs() <= 5 * (p.double() * (1 - p.double()) / n).sqrt()).all(), freq
    assert_close(lp, p.log()[tok], atol=1e-6, rtol=0)
    assert torch.equal(lp, sampler_lp)
