"""Issue 5 done-when: `kl_budget` holds the measured KL(π‖π_ref) within 20% of its target.

The run: HyPO on 16 TL;DR pairs with a tiny random model at a high learning rate (1e-2, constant),
λ starting at 0, k = 4 samples of 8 tokens per prompt, budget 1.5 nats, dual step η_λ = 0.5:
    λ ← max(0, λ + η_λ (KL_measured − 1.5))   after every step (paper Eq. 6, constrained form).
Warm-up: for its first ~16 steps DPO alone has not yet pushed the KL to the budget (λ stays 0),
then λ rises and pulls it back. Dual ascent controls the constraint on AVERAGE (the averaged
iterates of a primal-dual method satisfy it; single steps oscillate around it, and each step's
estimate from 16 samples is itself noisy), so the test asserts the mean logged KL over steps
21-40, and that λ did work: it became positive and the KL would otherwise keep rising (the same
run with λ fixed at 0 is DPO, whose KL test_online_train.py shows growing past 1).
Measured on this workload (seeded, CPU): mean KL over steps 21-40 = 1.25 (target 1.5, -17%),
λ peaking at 4.45; the per-step KL swings 0.3-3.5 (a limit cycle of about 10 steps: the integral
controller overshoots after the λ = 0 warm-up). The margin to the 20% band is small; a longer run
or a smaller η_λ tightens it at the cost of test time.
"""

from __future__ import annotations

import pytest
from online_runs import rows, train

TARGET = 1.5


def test_kl_budget_holds_the_mean_kl_near_its_target(tiny_model_dir, tmp_path):
    run = train("hypo.yaml", tmp_path / "budget", f"model.name_or_path={tiny_model_dir}", "optim.max_steps=40",
                "optim.lr=1e-2", "method_args.lam=0.0", f"method_args.kl_budget={TARGET}", "method_args.lambda_lr=0.5",
                "method_args.k=4", "method_args.max_new_tokens=8")
    logged = rows(run)
    after_warmup = [r["kl"] for r in logged[20:]]
    mean_kl = sum(after_warmup) / len(after_warmup)
    print(f"\nkl_budget {TARGET}: mean KL over steps 21-40 = {mean_kl:.3f}; "
          f"λ max {max(r['lambda'] for r in logged):.2f}, last {logged[-1]['lambda']:.2f}")
    assert logged[0]["lambda"] == 0.0 and max(r["lambda"] for r in logged) > 0.5  # the dual variable acted
    assert mean_kl == pytest.approx(TARGET, rel=0.2)
