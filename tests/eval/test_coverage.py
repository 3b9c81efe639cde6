"""Coverage diagnostics (hybridpo.evaluate.coverage_metrics, `coverage/...` in eval.json).

1. The formulas on numbers small enough to do by hand.
2. On the enumerable model of test_kl_exact.py (4-token vocabulary, at most 3 new tokens: 40
   possible responses per prompt), the Monte-Carlo diagnostics on K samples of π against their
   exact values: the share of samples with π/π_ref > 10 is a mean of indicators whose exact mean
   Σ_y π(y|x) 1[d(y) > log 10] and variance are computed here, so it must lie within 4 of its
   standard errors; the sample max of d can never exceed the max of d over π's support; the share
   outside the data's 5th percentile (the data: π_ref's 8 likeliest responses per prompt) against
   its exact value in the same way.
3. In `evaluate`: π = π_ref gives ratios of exactly 1 (every log ratio 0), the mean log ratio is
   the KL estimate (same samples), the data are the pairs' responses when pairs are given.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch

from hybridpo.data import PreferenceExample, PromptExample
from hybridpo.evaluate import EvalConfig, coverage_metrics, evaluate, kl_samples
from test_kl_exact import EOS, MAX_NEW, PAD, PROMPTS, exact_tok_logps, responses
from tiny_models import tiny_model

K = 2000  # samples per prompt in the exact comparison


def test_formulas_by_hand():
    d = torch.tensor([0.0, math.log(20.0), math.log(200.0), -1.0])  # ratios 1, 20, 200, 1/e
    a = torch.tensor([-1.0, -2.0, -3.0, -4.0])  # per-token log π_ref of the samples
    b = torch.linspace(-3.0, -1.0, 21)  # the data: -3.0, -2.9, ..., -1.0
    m = coverage_metrics(d, a, b)
    assert m["coverage/share_above_log10"] == pytest.approx(0.5)  # 20 and 200
    assert m["coverage/share_above_log100"] == pytest.approx(0.25)  # 200 only
    assert m["coverage/logratio_max"] == pytest.approx(math.log(200.0))
    assert m["coverage/logratio_mean"] == pytest.approx((math.log(20) + math.log(200) - 1) / 4)
    # sorted d: -1, 0, log 20, log 200; the median interpolates halfway between 0 and log 20
    assert m["coverage/logratio_q50"] == pytest.approx(math.log(20.0) / 2)
    # q90 at position 0.9 * 3 = 2.7: log 20 + 0.7 (log 200 - log 20)
    assert m["coverage/logratio_q90"] == pytest.approx(math.log(20) + 0.7 * math.log(10))
    assert m["coverage/log_mean_ratio"] == pytest.approx(math.log((1 + 20 + 200 + math.exp(-1)) / 4))
    assert m["coverage/ref_logp_per_token"] == pytest.approx(-2.5)
    assert m["coverage/data_ref_logp_per_token"] == pytest.approx(-2.0)
    # the data's 5th percentile: position 0.05 * 20 = 1 -> -2.9; samples below it: -3 and -4
    assert m["coverage/outside_data_q05"] == pytest.approx(0.5)
    assert m["coverage/samples"] == 4
    assert "coverage/outside_data_q05" not in coverage_metrics(d, a)  # no data, no comparison


@pytest.fixture(scope="module")
def models():
    # init 1.0: log ratios of a few nats, so π/π_ref > 10 on a real share of π's samples
    return tiny_model(4, seed=0, init=1.0), tiny_model(4, seed=1, init=1.0)


def test_sampled_diagnostics_match_their_exact_values(models):
    policy, ref = models
    ys = responses()
    p_above, d_max, laws, data_lp = [], [], [], []
    for x in PROMPTS:
        pt = [exact_tok_logps(policy, x, y, 1.0) for y in ys]
        rt = [exact_tok_logps(ref, x, y, 1.0) for y in ys]
        p = torch.stack([t.sum() for t in pt]).exp()  # (40,) π(y|x)
        d = torch.stack([u.sum() - v.sum() for u, v in zip(pt, rt)])  # (40,) log π/π_ref
        per_token = torch.stack([v.sum() / len(y) for v, y in zip(rt, ys)])  # (40,) log π_ref / |y|
        p_above.append((p * (d > math.log(10)).double()).sum().item())
        d_max.append(d[p > 0].max().item())
        # the "offline data" of this prompt: π_ref's 8 likeliest responses (a dataset drawn from π_ref's modes)
        seq_ref = torch.stack([v.sum() for v in rt])
        data_lp += per_token[seq_ref.argsort(descending=True)[:8]].tolist()
        laws.append((p, per_token))
    floor = torch.quantile(torch.tensor(data_lp, dtype=torch.float64), 0.05).item()
    out_exact = [(p * (a < floor).double()).sum().item() for p, a in laws]
    share, out = sum(p_above) / len(PROMPTS), sum(out_exact) / len(PROMPTS)
    se_share = math.sqrt(sum(q * (1 - q) for q in p_above) / K) / len(PROMPTS)
    se_out = math.sqrt(sum(q * (1 - q) for q in out_exact) / K) / len(PROMPTS)
    assert 0.05 < share < 0.95 and 0.01 < out < 0.99, (share, out)  # neither check is between two trivial values

    cfg = EvalConfig(max_new_tokens=MAX_NEW, kl_samples=K, batch_size=len(PROMPTS), seed=7)
    s = kl_samples(policy, ref, PROMPTS, pad_id=PAD, eos_id=EOS, cfg=cfg)
    m = coverage_metrics(s.policy - s.ref, s.ref / s.lengths, torch.tensor(data_lp))
    assert abs(m["coverage/share_above_log10"] - share) < 4 * se_share, (m["coverage/share_above_log10"], share)
    assert abs(m["coverage/outside_data_q05"] - out) < 4 * se_out, (m["coverage/outside_data_q05"], out)
    assert m["coverage/logratio_max"] <= max(d_max) + 1e-4  # never above the max over π's support
    assert m["coverage/logratio_max"] > max(d_max) - 1.0  # 6000 samples find the large ratios


def _examples(tok, n):
    prompts, pairs = [], []
    for i in range(n):
        text = f"item {i}: the quick brown fox"
        pid = tok.encode(text)
        chosen, rejected = tok.encode(" jumps over") + [0], tok.encode(" sleeps") + [0]
        prompts.append(PromptExample(pid, text, chosen, " jumps over", None))
        pairs.append(PreferenceExample(pid, chosen, rejected, text, " jumps over", " sleeps", None))
    return prompts, pairs


def _gpt_neox(tok, seed):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128, eos_token_id=0, pad_token_id=1)
    return GPTNeoXForCausalLM(cfg).eval()


def test_evaluate_reports_coverage_ratios_of_one_for_the_reference_itself(tok):
    policy = _gpt_neox(tok, 0)
    prompts, pairs = _examples(tok, 6)
    cfg = EvalConfig(max_new_tokens=6, kl_samples=4, batch_size=4)
    m = evaluate(policy, copy.deepcopy(policy), tok, prompts, pairs=pairs, cfg=cfg).metrics
    for k in ("logratio_mean", "logratio_q50", "logratio_q99", "logratio_max", "share_above_log10", "share_above_log100"):
        assert m[f"coverage/{k}"] == 0.0, k
    assert m["coverage/log_mean_ratio"] == pytest.approx(0.0, abs=1e-12)
    assert m["coverage/samples"] == 6 * 4
    assert 0.0 <= m["coverage/outside_data_q05"] <= 1.0


def test_evaluate_coverage_mean_is_the_kl_estimate_and_reads_the_pairs(tok):
    policy, ref = _gpt_neox(tok, 0), _gpt_neox(tok, 1)
    prompts, pairs = _examples(tok, 6)
    cfg = EvalConfig(max_new_tokens=6, kl_samples=4, batch_size=4)
    with_pairs = evaluate(policy, ref, tok, prompts, pairs=pairs, cfg=cfg).metrics
    assert with_pairs["coverage/logratio_mean"] == pytest.approx(with_pairs["kl"], abs=1e-5)  # k samples per prompt
    assert with_pairs["coverage/log_mean_ratio"] >= with_pairs["coverage/logratio_mean"]  # Jensen
    assert with_pairs["coverage/logratio_max"] > 0.0  # two random models: some ratio above 1
    # the data's per-token log π_ref is the mean over chosen and rejected of ref_logps / length
    lengths = torch.tensor([[len(p.chosen_ids), len(p.rejected_ids)] for p in pairs], dtype=torch.float64)
    means = torch.tensor([with_pairs["ref_logps/chosen"], with_pairs["ref_logps/rejected"]], dtype=torch.float64)
    assert with_pairs["coverage/data_ref_logp_per_token"] == pytest.approx(
        (means / lengths[0]).mean().item(), rel=1e-4)  # every pair has the same two lengths here
    without_pairs = evaluate(policy, ref, tok, prompts, cfg=cfg).metrics  # data = the references (= chosen)
    assert without_pairs["coverage/data_ref_logp_per_token"] == pytest.approx(
        with_pairs["ref_logps/chosen"] / lengths[0, 0].item(), rel=1e-4)
    off = evaluate(policy, ref, tok, prompts, cfg=EvalConfig(max_new_tokens=6, kl_samples=4, coverage=False)).metrics
    assert not any(k.startswith("coverage/") for k in off)
