"""The benchmark drives online methods through the public registry (toy methods stand in here).

A toy method with the registry's interface samples through ctx.sample and scores through
ctx.logps / ctx.ref_logps / ctx.reward; the driver must hand it the workload's k and sample
length, and count the samples it drew (completions and FLOPs).
"""

import math
from dataclasses import dataclass, replace

import pytest
import torch

from hybridpo.bench import hybridpo_runner
from hybridpo.bench.flops import ModelShape, dpo_step_flops, online_step_flops
from hybridpo.bench.workloads import build_pairs, get_workload
from hybridpo.losses import dpo_loss, hypo_kl_loss, rloo_policy_loss
from hybridpo.methods import METHODS, Method


@dataclass
class ToyConfig:
    beta: float = 0.1  # KL strength
    k: int = 1  # samples per prompt
    max_new_tokens: int = 1  # sample length cap


class ToyHyPO(Method):
    name = "hypo"
    Config = ToyConfig
    needs_reference = True

    def loss(self, batch, ctx):
        prompts = [ex.prompt_ids for ex in batch]
        rollout = ctx.sample(prompts, self.cfg.k, max_new_tokens=self.cfg.max_new_tokens)
        responses = [[ex.chosen_ids, ex.rejected_ids, *s] for ex, s in zip(batch, rollout.responses)]
        pol, ref = ctx.logps(prompts, responses).by_prompt(), ctx.ref_logps(prompts, responses).by_prompt()
        loss = dpo_loss(pol[:, 0], pol[:, 1], ref[:, 0], ref[:, 1], self.cfg.beta) + hypo_kl_loss(pol[:, 2:], ref[:, 2:])
        return loss.mean(), {"logps/chosen": pol[:, 0].mean().item()}


class ToyRLHF(Method):
    name = "rlhf"
    Config = ToyConfig
    needs_reference = True
    needs_reward_model = True
    data_kind = "prompts"

    def loss(self, batch, ctx):
        prompts = [ex.prompt_ids for ex in batch]
        rollout = ctx.sample(prompts, self.cfg.k, max_new_tokens=self.cfg.max_new_tokens)
        pol = ctx.logps(prompts, rollout.responses).by_prompt()  # (B, k)
        ref = ctx.ref_logps(prompts, rollout.responses).by_prompt()
        rewards = ctx.reward(prompts, rollout.responses).view_as(pol)
        return rloo_policy_loss(pol, ref, rewards, self.cfg.beta).mean(), {}


def test_hypo_method_gets_the_workload_knobs_and_its_samples_are_counted(monkeypatch):
    monkeypatch.setitem(METHODS, "hypo", ToyHyPO)
    torch.set_num_threads(1)
    w = replace(get_workload("tiny"), steps=2, batch_pairs=2, hypo_new_tokens=3)
    record = hybridpo_runner.run_hypo(w)
    assert "methods['hypo']" in record.note and "'k': 2" in record.note and "'max_new_tokens': 3" in record.note
    assert record.completions_per_step == 4  # 2 prompts x k = 2
    assert set(record.phase_s[0]) >= {"sampling", "policy forward", "reference forward", "backward"}
    # each sample is at most 3 tokens, so a step needs more than the pair alone but at most the
    # pair plus two full 3-token samples per prompt
    pairs = build_pairs(w)[:2]
    shape = ModelShape(w.layers, w.hidden, w.intermediate, w.vocab)
    pair_only = dpo_step_flops(shape, [(len(p.prompt_ids), [len(p.chosen_ids), len(p.rejected_ids)]) for p in pairs])
    most = online_step_flops(
        shape, [(len(p.prompt_ids), [len(p.chosen_ids), len(p.rejected_ids), 3, 3]) for p in pairs], [[3, 3]] * 2
    )
    assert pair_only < record.flops[0] <= most


def test_rlhf_method_samples_full_length_and_uses_the_programmatic_reward(monkeypatch):
    monkeypatch.setitem(METHODS, "rlhf", ToyRLHF)
    torch.set_num_threads(1)
    w = replace(get_workload("tiny"), steps=2, batch_pairs=2, rloo_new_tokens=4)
    record = hybridpo_runner.run_rlhf(w)
    assert record.completions_per_step == 4 and "no EOS stop" in record.note
    assert "reward" in record.phase_s[0]
    pairs = build_pairs(w)[:2]
    shape = ModelShape(w.layers, w.hidden, w.intermediate, w.vocab)
    expected = online_step_flops(shape, [(len(p.prompt_ids), [4, 4]) for p in pairs], [[4, 4]] * 2)
    assert record.flops[0] == expected  # no EOS stop: every sample has exactly 4 tokens


def test_a_method_config_without_the_knob_is_reported_unavailable(monkeypatch):
    @dataclass
    class NoK:
        beta: float = 0.1  # only beta

    class Bad(ToyHyPO):
        Config = NoK

    monkeypatch.setitem(METHODS, "hypo", Bad)
    with pytest.raises(hybridpo_runner.Unavailable, match="no field for k"):
        hybridpo_runner.run_hypo(replace(get_workload("tiny"), steps=1))


@pytest.mark.parametrize("runner, name", [(hybridpo_runner.run_hypo, "hypo"), (hybridpo_runner.run_rlhf, "rlhf")])
def test_the_real_online_methods_run_through_the_driver(runner, name):
    torch.set_num_threads(1)
    w = replace(get_workload("tiny"), steps=2, batch_pairs=2, hypo_new_tokens=4, rloo_new_tokens=4)
    record = runner(w)
    assert f"methods[{name!r}]" in record.note
    assert len(record.losses) == 2 and all(math.isfinite(x) for x in record.losses)
    assert record.completions_per_step == 4 and record.flops[0] > 0 and "sampling" in record.phase_s[0]
