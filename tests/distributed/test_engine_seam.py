"""The contract an inference engine meets (docs/generation_engine.md), with a stand-in engine.

`CopyEngine` holds its own copy of the weights, as a colocated vLLM would, and samples from it
with the generate sampler; the loop pushes the weights after each optimizer step through the
sampler's `weights_updated(model, step)`. A run sampling through the engine then logs exactly
what the same run sampling from the live model logs (one machine, one path: the copy's weights
are the model's, bit for bit). An engine that is never pushed samples from the step-0 weights and
logs other numbers: the comparison can fail.
"""

from __future__ import annotations

import copy

import pytest

from hybridpo.config import config_from_dict
from hybridpo.loop import Run
from hybridpo.sampling import GenerateSampler


class CopyEngine:
    """A stand-in engine: its own weights, changed only by a push."""

    def __init__(self, model, push: bool = True):
        self.weights = copy.deepcopy(model).eval()
        self.push, self.pushes, self.sample = push, [], GenerateSampler()

    def weights_updated(self, model, step: int) -> None:
        self.pushes.append(step)
        if self.push:
            self.weights.load_state_dict(model.state_dict())

    def __call__(self, model, prompts, k, **kwargs):
        kwargs.pop("prompt_pass", None)  # the engine runs its own prefill
        return self.sample(self.weights, prompts, k, **kwargs)


def run_rows(model_dir, tmp_path, engine=None, steps=3) -> tuple[list[dict], object]:
    cfg = config_from_dict({
        "method": "hypo",
        "method_args": {"beta": 0.1, "lam": 0.5, "k": 2, "max_new_tokens": 6, "top_k": 8},
        "model": {"name_or_path": str(model_dir), "reference": "copy"},
        "data": {"recipe": "tldr", "max_prompt_length": 16, "max_response_length": 8, "max_rows": 8,
                 "max_eval_rows": 2},
        "optim": {"lr": 1e-3, "batch_size": 2, "max_steps": steps, "schedule": "constant"},
        "run": {"out_dir": str(tmp_path), "progress": False},
        "speed": {"sampler": "generate"},
    })
    run = Run.build(cfg)
    assert isinstance(run.ctx.policy.sampler, GenerateSampler)  # speed.sampler chose it
    if engine is not None:
        engine = run.ctx.policy.sampler = engine(run.model)
    run.prepare()
    return [run.step_once() for _ in range(steps)], engine


def test_an_engine_pushed_after_each_step_samples_what_the_live_model_samples(tiny_model_dir, tmp_path):
    live, _ = run_rows(tiny_model_dir, tmp_path / "live")
    pushed, engine = run_rows(tiny_model_dir, tmp_path / "engine", engine=CopyEngine)
    assert engine.pushes == [1, 2, 3]  # once per optimizer step, after it
    for a, b in zip(live, pushed):
        for key in ("loss", "kl", "entropy", "loss/kl_surrogate"):
            assert a[key] == b[key], key
    stale, engine = run_rows(tiny_model_dir, tmp_path / "stale", engine=lambda m: CopyEngine(m, push=False))
    assert stale[0]["kl"] == live[0]["kl"]  # step 1: the same weights either way
    assert stale[-1]["entropy"] != pytest.approx(live[-1]["entropy"], abs=1e-6)  # old weights: other samples
