"""The loop runs an online method with no change: sampling, reference log-probs, own metrics, state.

A probe method (defined here, registered for the test only) samples k = 2 completions per prompt
from the policy, scores them under policy and reference, and minimises a REINFORCE surrogate of
the reverse KL (the shape of HyPO's online term). It also keeps a counter in its state_dict,
which checkpoints must carry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from hybridpo.config import config_from_dict
from hybridpo.loop import train
from hybridpo.methods import METHODS, Method, MethodArgs

REPO = Path(__file__).resolve().parents[2]


@dataclass
class ProbeConfig(MethodArgs):
    k: int = 2  # samples per prompt
    max_new_tokens: int = 6  # sample length cap


class Probe(Method):
    name = "probe"
    Config = ProbeConfig
    needs_reference = True

    def __init__(self, cfg):
        super().__init__(cfg)
        self.calls = 0

    def loss(self, batch, ctx):
        self.calls += 1
        prompts = [ex.prompt_ids for ex in batch]
        rollout = ctx.policy.sample(prompts, self.cfg.k, max_new_tokens=self.cfg.max_new_tokens)
        policy = ctx.policy.logps(prompts, rollout.responses).by_prompt()  # (P, k), with grad
        ref = ctx.reference.logps(prompts, rollout.responses).by_prompt()  # (P, k)
        log_ratio = (policy - ref).detach()
        loss = (log_ratio * policy).mean()  # ∇ = E[log(π/π_ref) ∇ log π] = ∇ KL(π‖π_ref)
        sampler_gap = (rollout.logps.to(policy.device) - policy.detach()).abs().max().item()
        return loss, {"loss": loss.item(), "kl": log_ratio.mean().item(), "sampler_gap": sampler_gap}

    def state_dict(self):
        return {"calls": self.calls}

    def load_state_dict(self, state):
        self.calls = state["calls"]


def test_an_online_method_plugs_into_the_loop(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(METHODS, "probe", Probe)
    cfg = config_from_dict({
        "method": "probe",
        "model": {"name_or_path": str(tiny_model_dir)},
        "data": {"recipe": "tldr", "max_prompt_length": 16, "max_response_length": 8, "max_rows": 8, "max_eval_rows": 2},
        "optim": {"lr": 1e-3, "batch_size": 2, "max_steps": 3, "schedule": "constant"},
        "run": {"out_dir": str(tmp_path / "run"), "progress": False, "eval_examples": 2},
    })
    result = train(cfg)
    assert result.step == 3 and result.interrupted is None
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    # step 1: π = π_ref (a frozen copy) and the same tokens -> the sampled KL estimate is exactly 0
    assert train_rows[0]["kl"] == pytest.approx(0.0, abs=1e-6)
    # the sampler's log-probs are the policy's (same temperature, same mask)
    assert all(r["sampler_gap"] < 1e-4 for r in train_rows)
    assert all(0 < r["sample_time_share"] < 1 for r in train_rows)
    state = torch.load(tmp_path / "run" / "checkpoints" / "step-00000003" / "method.pt")
    assert state == {"calls": 3}
