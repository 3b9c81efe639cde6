"""The evaluation KL against the exact KL of a model whose responses can be enumerated.

A random 2-layer GPT-NeoX over a 4-token vocabulary (EOS = 0; pad = 3, a real token the masks
must hide), π and π_ref two different inits, at most 3 new tokens. A response stops at its first
EOS (kept) or is cut after 3 tokens, so the responses are exactly: [EOS]; [a, EOS]; [a, b, c]
for a, b in {1, 2, 3} and any c (40 sequences). Their log-probs under π_τ = softmax(logits / τ)
are computed here from one plain forward per sequence (no cache, no padding, no batching), so

    KL_x = Σ_y π_τ(y|x) (log π_τ(y|x) - log π_ref,τ(y|x)),   Var_x = Σ_y π_τ(y|x) (d(y) - KL_x)²

are exact, and the Monte-Carlo estimate of `hybridpo.evaluate.reverse_kl` over K samples per
prompt must lie within 4 of its own exact standard errors sqrt(Σ_x Var_x / K) / P of the mean of
KL_x. The quantities that a temperature, mask or estimator error would give instead are computed
too, and each is shown to be many standard errors away, so the check can fail.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from hybridpo.evaluate import EvalConfig, logratios, reverse_kl
from tiny_models import tiny_model

V, EOS, PAD, MAX_NEW = 4, 0, 3, 3
PROMPTS = [[1, 2], [3], [2, 2, 1]]
K = 2500  # samples per prompt


def responses() -> list[list[int]]:
    """Every response of at most MAX_NEW tokens that stops at its first EOS or at the limit."""
    out = [[EOS]]
    for n in range(1, MAX_NEW - 1):  # stopped by EOS before the limit
        out += [list(prefix) + [EOS] for prefix in itertools.product((1, 2, 3), repeat=n)]
    out += [list(prefix) + [last] for prefix in itertools.product((1, 2, 3), repeat=MAX_NEW - 1)
            for last in range(V)]  # at the limit: the last token is EOS or a cut
    assert len(out) == 1 + 3 + 9 * 4
    return out


@torch.no_grad()
def exact_tok_logps(model, prompt: list[int], y: list[int], temperature: float) -> torch.Tensor:
    """log π_τ(y_t | x, y_<t) for each token of y, from one forward of x + y.   -> (len(y),) fp64"""
    logits = model(torch.tensor([prompt + y])).logits[0].double()  # (T, V)
    logp = (logits / temperature).log_softmax(-1)
    return logp[len(prompt) - 1 : len(prompt) - 1 + len(y)].gather(-1, torch.tensor(y)[:, None]).squeeze(-1)


@pytest.fixture(scope="module")
def models():
    return tiny_model(V, seed=0, init=0.5), tiny_model(V, seed=1, init=0.5)


def exact(policy, ref, temperature: float) -> dict:
    """Exact per-prompt quantities over the enumerated responses."""
    ys = responses()
    out = {"kl": [], "var": [], "kl_logps_at_1": [], "kl_without_eos": [], "kl_token_mean": [], "total": []}
    for x in PROMPTS:
        pt = [exact_tok_logps(policy, x, y, temperature) for y in ys]
        rt = [exact_tok_logps(ref, x, y, temperature) for y in ys]
        p = torch.stack([t.sum() for t in pt]).exp()  # (40,) π_τ(y|x)
        d = torch.stack([a.sum() - b.sum() for a, b in zip(pt, rt)])  # (40,) sequence log-ratio
        kl = (p * d).sum()
        out["total"].append(p.sum().item())
        out["kl"].append(kl.item())
        out["var"].append((p * (d - kl) ** 2).sum().item())
        # what the wrong estimators would converge to, on the same samples of π_τ:
        d1 = torch.stack([exact_tok_logps(policy, x, y, 1.0).sum() - exact_tok_logps(ref, x, y, 1.0).sum() for y in ys])
        out["kl_logps_at_1"].append((p * d1).sum().item())  # log-probs at τ = 1, samples at τ
        no_eos = torch.stack([(a - b)[torch.tensor(y) != EOS].sum() for a, b, y in zip(pt, rt, ys)])
        out["kl_without_eos"].append((p * no_eos).sum().item())  # the EOS token masked out
        out["kl_token_mean"].append((p * d / torch.tensor([len(y) for y in ys])).sum().item())  # per-token mean
    return out


def mean(xs) -> float:
    return sum(xs) / len(xs)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_reverse_kl_matches_the_exact_kl_within_its_standard_error(models, temperature):
    policy, ref = models
    e = exact(policy, ref, temperature)
    # the 40 responses are all there are (1e-5: each sequence is its own fp32 forward, so a shared prefix
    # gets logits rounded differently in each)
    assert e["total"] == pytest.approx([1.0] * len(PROMPTS), abs=1e-5)
    target = mean(e["kl"])
    se = math.sqrt(sum(e["var"]) / K) / len(PROMPTS)  # exact std error of the mean over prompts of K-sample means
    assert target > 20 * se  # π and π_ref differ: the check is not between two zeros
    for wrong in ("kl_logps_at_1", "kl_without_eos", "kl_token_mean"):
        if wrong == "kl_logps_at_1" and temperature == 1.0:
            continue  # the same quantity at τ = 1
        assert abs(mean(e[wrong]) - target) > 8 * se, wrong  # an error of that kind would fail below

    cfg = EvalConfig(max_new_tokens=MAX_NEW, kl_samples=K, kl_temperature=temperature, batch_size=len(PROMPTS), seed=3)
    got = reverse_kl(policy, ref, PROMPTS, pad_id=PAD, eos_id=EOS, cfg=cfg)
    assert abs(got["kl"] - target) < 4 * se, (got["kl"], target, se)


def test_kl_stderr_is_the_standard_error_of_the_estimate(models):
    """30 copies of one prompt, 200 samples each: the 30 per-prompt means are i.i.d. with variance
    Var_x / 200, so `kl_stderr` (their sample std / sqrt(30)) estimates sqrt(Var_x / 6000). The
    ratio to the exact value has a spread of about 1/sqrt(2 * 29) = 0.13; [0.6, 1.5] is ~3σ wide,
    while forgetting the sqrt(30) (or using sqrt(6000)) is off by a factor of 5.5 (or 14)."""
    policy, ref = models
    x = PROMPTS[0]
    e = exact(policy, ref, 1.0)
    se = math.sqrt(e["var"][0] / (200 * 30))
    cfg = EvalConfig(max_new_tokens=MAX_NEW, kl_samples=200, batch_size=30, seed=5)
    got = reverse_kl(policy, ref, [x] * 30, pad_id=PAD, eos_id=EOS, cfg=cfg)
    assert 0.6 < got["kl_stderr"] / se < 1.5, (got["kl_stderr"], se)
    assert abs(got["kl"] - e["kl"][0]) < 4 * se


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logratios_of_every_response_are_the_exact_ones(models, temperature):
    """The log-ratio `reverse_kl` averages, on fixed ids: EOS counted, nothing after it, a cut
    response summed over the tokens it has, log-probs at the sampling temperature; padded batches
    of responses of lengths 1-3 behind prompts of lengths 1-3 (pad = a real token id)."""
    policy, ref = models
    ys = responses()
    pol, rlp = logratios(policy, ref, PROMPTS, [ys] * len(PROMPTS), pad_id=PAD, temperature=temperature)
    want_pol = [exact_tok_logps(policy, x, y, temperature).sum().item() for x in PROMPTS for y in ys]
    want_ref = [exact_tok_logps(ref, x, y, temperature).sum().item() for x in PROMPTS for y in ys]
    assert pol.tolist() == pytest.approx(want_pol, abs=1e-5)
    assert rlp.tolist() == pytest.approx(want_ref, abs=1e-5)
