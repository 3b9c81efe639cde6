"""Methods on hand-made log-probs: each expected number is derived in the comment beside it."""

from __future__ import annotations

import math

import pytest
import torch

from hybridpo.data import PreferenceExample, PromptExample
from hybridpo.forward import ResponseLogps
from hybridpo.methods import METHODS, MethodContext, get_method
from hybridpo.methods.dpo import DPO, IPO, DPOConfig, IPOConfig
from hybridpo.methods.sft import SFT, SFTConfig


def pair(prompt, chosen, rejected):
    return PreferenceExample(prompt, chosen, rejected, "p", "c", "r", None)


class FixedLogps:
    """A model role whose `logps` returns table[tuple(response)] as the sequence log-prob of each
    response (spread evenly over its tokens), counting the responses it was asked about."""

    def __init__(self, table: dict, calls: list):
        self.table, self.calls = table, calls

    def logps(self, prompts, responses, temperature=1.0, prompt_pass=None):
        self.calls.append(sum(len(rs) for rs in responses))
        flat = [r for rs in responses for r in rs]
        values = torch.tensor([self.table[tuple(r)] for r in flat], requires_grad=True)
        lengths = torch.tensor([len(r) for r in flat])
        L = int(lengths.max())
        mask = torch.arange(L)[None] < lengths[:, None]
        tok = torch.where(mask, (values / lengths)[:, None], torch.zeros(()))
        return ResponseLogps(values, tok, mask, lengths, [len(rs) for rs in responses])


def context(policy_table, ref_table, calls_policy=None, calls_ref=None):
    return MethodContext(
        policy=FixedLogps(policy_table, calls_policy if calls_policy is not None else []),
        reference=FixedLogps(ref_table, calls_ref if calls_ref is not None else []), pad_id=1, eos_id=0,
    )


# chosen (2 tokens) and rejected (4 tokens)
BATCH = [pair([5], [7, 0], [8, 9, 9, 0])]
POLICY = {(7, 0): -1.0, (8, 9, 9, 0): -3.0}
REF = {(7, 0): -2.0, (8, 9, 9, 0): -2.0}


def test_dpo_loss_and_trl_metrics():
    loss, m = DPO(DPOConfig(beta=0.5)).loss(BATCH, context(POLICY, REF))
    # h = (-1 - -2) - (-3 - -2) = 2;  loss = -log σ(β h) = log(1 + e^{-1})
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1.0)), abs=1e-6)
    assert m["rewards/chosen"] == pytest.approx(0.5)  # β (log π - log π_ref) = 0.5 * 1
    assert m["rewards/rejected"] == pytest.approx(-0.5)  # 0.5 * (-1)
    assert m["rewards/margins"] == pytest.approx(1.0)
    assert m["rewards/accuracies"] == 1.0
    assert (m["logps/chosen"], m["logps/rejected"]) == (-1.0, -3.0)


def test_ipo_sequence_and_per_token_averaged():
    loss, _ = IPO(IPOConfig(beta=0.5)).loss(BATCH, context(POLICY, REF))
    # sequence sums: h = 2, target 1/(2β) = 1  ->  (2 - 1)² = 1
    assert loss.item() == pytest.approx(1.0)
    loss, m = IPO(IPOConfig(beta=0.5, ipo_average_logps=True)).loss(BATCH, context(POLICY, REF))
    # averaged: chosen (-1 - -2)/2 = 0.5, rejected (-3 - -2)/4 = -0.25 -> h = 0.75 -> (0.75 - 1)² = 0.0625
    assert loss.item() == pytest.approx(0.0625)
    assert m["rewards/margins"] == pytest.approx(0.5 * 0.75)


def test_precomputed_reference_is_computed_once_per_pair():
    calls = []
    method = DPO(DPOConfig(beta=0.1, precompute_ref_logps=True))
    ctx = context(POLICY, REF, calls_ref=calls)
    method.prepare(BATCH, ctx)
    assert calls == [2]  # one pair: chosen + rejected, before training
    for _ in range(3):
        loss, _ = method.loss(BATCH, ctx)
    assert calls == [2]  # never again
    # h = 2 as above, β = 0.1: -log σ(0.2)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-0.2)), abs=1e-6)


def test_sft_is_mean_token_nll_over_responses():
    batch = [PromptExample([5], "p", [7, 0], "c", None), PromptExample([6], "p", [8, 9, 9, 0], "c", None)]
    loss, m = SFT(SFTConfig()).loss(batch, context(POLICY, REF))
    # token log-probs: 2 tokens of -0.5, 4 tokens of -0.75 -> NLL (1 + 3) / 6 tokens
    assert loss.item() == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match="prompt-only"):
        SFT(SFTConfig()).loss([PromptExample([5], "p", None, None, None)], context(POLICY, REF))


def test_registry_properties_and_unknown_names():
    assert set(METHODS) >= {"sft", "rm", "dpo", "ipo"}
    assert METHODS["dpo"].needs_reference and METHODS["ipo"].needs_reference
    assert not METHODS["sft"].needs_reference and not METHODS["rm"].needs_reference
    assert METHODS["rm"].model_head == "reward" and METHODS["sft"].data_kind == "prompts"
    with pytest.raises(ValueError, match=r"method='dpoo'; choose from \["):
        get_method("dpoo")
    with pytest.raises(ValueError, match="beta=0"):
        DPO(DPOConfig(beta=0))
