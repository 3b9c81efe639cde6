"""hypo, online_dpo and rlhf through `hybridpo train` on a tiny model.

- With λ = 0 one HyPO step gives the same weights as one DPO step (same seed, same batch).
- Each online method runs end to end and logs the online metrics.
- With λ > 0, HyPO's KL(π‖π_ref) after 20 steps stays below DPO's after the same 20 steps on the
  same data, measured the same way for both (hybridpo.evaluate.reverse_kl on the final models).
- `kl_budget` holds the measured KL near its target (test_kl_budget.py).
"""

from __future__ import annotations

import math

import pytest
import torch
from online_runs import rows, train
from safetensors.torch import load_file

from hybridpo.config import ModelConfig, load_config
from hybridpo.data import load_preferences, load_tokenizer
from hybridpo.evaluate import EvalConfig, reverse_kl
from hybridpo.models import load_policy

ONLINE_KEYS = ("kl", "entropy", "response_length", "eos_rate")


def weights(run_or_dir) -> dict[str, torch.Tensor]:
    path = run_or_dir / "final" / "model.safetensors" if (run_or_dir / "final").exists() else run_or_dir / "model.safetensors"
    return load_file(str(path))


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


def test_hypo_step_with_lambda_zero_equals_dpo_step(tiny_model_dir, tmp_path):
    common = [f"model.name_or_path={tiny_model_dir}", "optim.max_steps=1", "optim.lr=1e-3"]
    dpo = train("dpo.yaml", tmp_path / "dpo", *common, "method_args.precompute_ref_logps=false")
    hypo = train("hypo.yaml", tmp_path / "hypo", *common, "method_args.lam=0.0", "method_args.max_new_tokens=4")
    start, after_dpo, after_hypo = weights(tiny_model_dir), weights(dpo), weights(hypo)
    assert max_diff(after_dpo, start) > 1e-4  # the step moved the weights (Adam: about lr = 1e-3 per weight)
    # float precision: HyPO's forward also holds the k samples, after a shared prompt pass. Adam's first
    # step moves each weight by lr * g / (|g| + eps), so gradients equal to float precision give updates
    # equal to a small fraction of lr = 1e-3; 1% of it allows for weights whose gradient is tiny.
    assert max_diff(after_hypo, after_dpo) < 1e-2 * 1e-3
    logged_dpo, logged_hypo = rows(dpo)[0], rows(hypo)[0]
    assert logged_hypo["loss"] == pytest.approx(logged_dpo["loss"], abs=1e-6)
    assert logged_hypo["lam"] == 0.0 and 0.0 < logged_hypo["sample_time_share"] < 1.0


@pytest.mark.parametrize("method, extra", [
    ("hypo", ["method_args.lam=0.5"]),
    ("online_dpo", ["method_args.k=3"]),
    ("rlhf", ["method_args.k=3", "method_args.updates_per_sample=2", "method_args.missing_eos_reward=-1.0"]),
])
def test_online_methods_run_end_to_end(method, extra, tiny_model_dir, reward_model_dir, tmp_path):
    run = train(f"{method}.yaml", tmp_path / method, f"model.name_or_path={tiny_model_dir}",
                f"model.reward_model={reward_model_dir}", "optim.max_steps=3", "optim.lr=1e-3",
                "method_args.max_new_tokens=6", *extra)
    logged = rows(run)
    assert [r["step"] for r in logged] == [1, 2, 3]
    for r in logged:
        assert all(key in r and math.isfinite(r[key]) for key in (*ONLINE_KEYS, "loss", "grad_norm"))
        assert 1 <= r["response_length"] <= 6 and 0 <= r["eos_rate"] <= 1
    # the loop times ctx.sample; rlhf with updates_per_sample=2 samples at steps 1 and 3 only
    sampled = [1, 3] if method == "rlhf" else [1, 2, 3]
    assert [r["step"] for r in logged if "sample_time_share" in r] == sampled
    assert all(0 < r["sample_time_share"] < 1 for r in logged if "sample_time_share" in r)
    assert logged[0]["kl"] == pytest.approx(0.0, abs=1e-4)  # step 1 samples π = π_ref (the same weights)
    # a random init is nearly uniform: the per-token entropy estimate is close to log 50,304 = 10.83 nats
    assert logged[0]["entropy"] == pytest.approx(math.log(50304), abs=0.3)
    if method == "hypo":
        assert all(r["lam"] == 0.5 for r in logged)
    else:
        assert all("reward" in r for r in logged)
    assert (run / "final" / "model.safetensors").exists()


def test_hypo_keeps_kl_below_dpo(tiny_model_dir, tmp_path):
    """Same data, seed, optimiser and 20 steps at a high learning rate (so DPO drifts measurably)."""
    common = [f"model.name_or_path={tiny_model_dir}", "optim.max_steps=20", "optim.lr=1e-2"]
    dpo = train("dpo.yaml", tmp_path / "dpo", *common)
    hypo = train("hypo.yaml", tmp_path / "hypo", *common, "method_args.lam=1.0", "method_args.max_new_tokens=8")

    tokenizer = load_tokenizer(str(tiny_model_dir))
    ref = load_policy(ModelConfig(name_or_path=str(tiny_model_dir))).eval()
    cfg = load_config(tmp_path / "dpo" / "config.yaml")
    prompts = [ex.prompt_ids for ex in load_preferences(cfg.data, tokenizer)[0]]  # the 16 training prompts
    ecfg = EvalConfig(kl_samples=4, max_new_tokens=8, batch_size=16)
    kl = {}
    for name, run in (("dpo", dpo), ("hypo", hypo)):
        policy = load_policy(ModelConfig(name_or_path=str(run / "final"))).eval()
        kl[name] = reverse_kl(policy, ref, prompts, pad_id=tokenizer.pad_token_id, eos_id=tokenizer.eos_token_id, cfg=ecfg)
    print(f"\nKL(π‖π_ref) after 20 steps: dpo {kl['dpo']['kl']:.3f} ± {kl['dpo']['kl_stderr']:.3f}, "
          f"hypo(λ=1) {kl['hypo']['kl']:.3f} ± {kl['hypo']['kl_stderr']:.3f}; "
          f"hypo's logged kl over its last 5 steps {sum(r['kl'] for r in rows(hypo)[-5:]) / 5:.3f}")
    assert kl["dpo"]["kl"] > 1.0  # DPO drifted measurably
    assert kl["hypo"]["kl"] + 3 * kl["hypo"]["kl_stderr"] < kl["dpo"]["kl"] - 3 * kl["dpo"]["kl_stderr"]
    assert sum(r["kl"] for r in rows(hypo)[-5:]) / 5 < kl["dpo"]["kl"]  # the logged KL of hypo stays below too
