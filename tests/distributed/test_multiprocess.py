"""Real processes: two CPU processes (accelerate launch with configs/accelerate/ddp.yaml, gloo)
train on exactly what one process trains on, for the same global batch of 4.

For DPO, HyPO (λ by dual ascent, `kl_budget`) and RLHF (a text scorer), each split differently
(2 processes x batch 2; 2 x batch 1 x grad_accum 2; 1 process x batch 2 x grad_accum 2 against
2 x batch 2): the final weights agree within 1e-5 (fp32; the run itself moves them by > 1e-3), the
logged losses, KL and λ agree to float rounding, λ is the same on every rank (each rank's
checkpointed method state), the checkpoints hold each process's part once, and a 2-process HyPO run
(and a 2-process RLHF run that reuses its samples for 2 steps)
killed with SIGKILL and resumed ends on exactly (bit for bit: one machine, one path) the weights of
the same run left alone, logging the same numbers at every step. The two runs of a pair reduce
gradients in another order, so they agree to rounding, not bit for bit.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from multi_runs import FAST, eval_rows, finish, kill_after, max_weight_diff, rows, start, train

STEPS = 6
# Two things a comparison of online runs must steer clear of, both measured on this model (docs/scaling.md):
# - samples are discontinuous in the weights: the random model is near-uniform over 50,304 tokens, and an inverse-CDF
#   draw over that vocabulary moves to a neighbouring token for a 1e-6 change of the weights (1 draw in 64 by step 4
#   with one process at batch 4 against batch 1 x grad_accum 4). With top_k = 8 a draw flips only by a ~1e-6
#   coincidence, and the samples of both runs stay identical; top-k truncates what is drawn, the loss still uses π_τ.
# - at step 1 π = π_ref, so the KL term's gradient is rounding noise (log-ratios ~1e-7 of either sign) that AdamW's
#   g / (√v + ε) turns into ±lr moves in any two numerical paths (9e-5 apart with λ = 0.5 from the start, 3e-6 with
#   λ = 0). λ starts at 0 here and rises by dual ascent once the KL passes the budget (from step 3).
HYPO = ["method=hypo", "method_args.beta=0.1", "method_args.lam=0", "method_args.k=2", "method_args.max_new_tokens=8",
        "method_args.top_k=8", "method_args.kl_budget=0.5", "method_args.lambda_lr=0.5", "model.reference=copy"]
CASES = {  # method options, (batch_size, grad_accum) of the 1-process run, of each of the 2 processes
    "dpo": (["method=dpo", "method_args.beta=0.1", "model.reference=copy"], (4, 1), (2, 1)),
    "hypo": (HYPO, (4, 1), (1, 2)),
    # RLHF reuses each batch of samples for 2 optimizer steps (PPO ratio): the reused samples are per-process state
    "rlhf": (["method=rlhf", "method_args.k=2", "method_args.max_new_tokens=8", "method_args.top_k=8",
              "method_args.beta=0.05", "method_args.updates_per_sample=2", "method_args.scorer=text_scorers:distinct_letters",
              "model.reference=copy"], (2, 2), (2, 1)),
}
TIMES: dict[str, float] = {}


def common(name: str, model_dir: Path) -> list[str]:
    return [f"model.name_or_path={model_dir}", *FAST, *CASES[name][0], f"optim.max_steps={STEPS}", "run.save_every=2"]


@pytest.fixture(scope="module")
def pairs(tiny_model_dir, tmp_path_factory):
    """name -> (1-process run, 2-process run), trained on first use."""
    done: dict[str, tuple[Path, Path]] = {}

    def get(name: str) -> tuple[Path, Path]:
        if name not in done:
            tmp = tmp_path_factory.mktemp(name)
            args, (b1, a1), (b2, a2) = CASES[name]
            t0 = time.perf_counter()
            train(1, *common(name, tiny_model_dir), f"run.out_dir={tmp / 'one'}", f"optim.batch_size={b1}",
                  f"optim.grad_accum={a1}")
            t1 = time.perf_counter()
            err = train(2, *common(name, tiny_model_dir), f"run.out_dir={tmp / 'two'}", f"optim.batch_size={b2}",
                        f"optim.grad_accum={a2}")
            TIMES[name] = (t1 - t0, time.perf_counter() - t1)
            assert "processes: 2 (MULTI_CPU); global batch 4" in err  # really two processes
            done[name] = (tmp / "one", tmp / "two")
        return done[name]

    return get


def close(a: float, b: float, tol: float = 1e-5) -> bool:
    return abs(a - b) <= tol * max(1.0, abs(a))


@pytest.mark.parametrize("name", sorted(CASES))
def test_two_processes_end_on_the_weights_of_one(name, pairs, tiny_model_dir):
    one, two = pairs(name)
    moved = max_weight_diff(tiny_model_dir, one / "final")
    diff = max_weight_diff(one / "final", two / "final")
    one_s, two_s = TIMES[name]
    print(f"{name}: moved {moved:.2e}, 1 vs 2 processes {diff:.2e}, wall {one_s:.1f} s / {two_s:.1f} s")
    assert moved > 1e-3  # the run changed the weights: equality is not trivial
    assert diff < 1e-5


@pytest.mark.parametrize("name", sorted(CASES))
def test_two_processes_log_the_losses_of_one(name, pairs):
    one, two = pairs(name)
    r1, r2 = rows(one), rows(two)
    assert [r["step"] for r in r1] == [r["step"] for r in r2] == list(range(1, STEPS + 1))
    keys = {"dpo": ["loss", "rewards/margins"], "hypo": ["loss", "kl", "lam", "response_length"],
            "rlhf": ["loss", "kl", "reward", "response_length", "ratio/mean"]}[name]
    for a, b in zip(r1, r2):
        for key in keys:
            assert close(a[key], b[key]), (a["step"], key, a[key], b[key])
    assert len({round(r["loss"], 6) for r in r1}) > 1  # the loss moved
    (e1,), (e2,) = eval_rows(one), eval_rows(two)  # held-out: summed and counted over both processes
    for key in e1:
        assert close(e1[key], e2[key]), (key, e1[key], e2[key])


def test_lam_is_the_same_on_every_rank_and_equals_one_process(pairs):
    one, two = pairs("hypo")
    ckpt = two / "checkpoints" / f"step-{STEPS:08d}"
    lam0 = torch.load(ckpt / "method.pt")["lam"]
    lam1 = torch.load(ckpt / "method-1.pt")["lam"]
    single = torch.load(one / "checkpoints" / f"step-{STEPS:08d}" / "method.pt")["lam"]
    assert lam0 == lam1  # the same float on both ranks: both stepped on the cross-process mean KL
    # it moved from 0, as it did in one process: λ sums lr_λ·(KL_t − budget) over the steps, and each
    # KL_t is a mean over a differently split batch (rounding ~1e-6 of it), so 1e-5 as for the logs
    assert lam0 > 0.1 and close(lam0, single)
    logged = [r["lam"] for r in rows(two)]
    assert len(set(logged)) > 2  # λ moved at (almost) every step, once per optimizer step


def test_checkpoints_hold_each_process_part_once(pairs):
    _, two = pairs("dpo")
    root = two / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest", f"step-{STEPS - 2:08d}", f"step-{STEPS:08d}"]
    files = sorted(p.name for p in (root / f"step-{STEPS:08d}").iterdir())
    assert files == ["method-1.pt", "method.pt", "model", "optimizer.pt", "rng-0.pt", "rng-1.pt", "scheduler.pt",
                     "state.json"]
    assert sorted(p.name for p in (two / "final").iterdir() if p.suffix == ".safetensors") == ["model.safetensors"]


@pytest.mark.parametrize("name", ["hypo", "rlhf"])
def test_killed_two_process_run_resumes_to_identical_weights(name, pairs, tiny_model_dir, tmp_path):
    """HyPO's λ (the same on every rank) and RLHF's reused samples (each rank's own, method-<rank>.pt)
    come back from the checkpoint; the samples drawn after it are drawn again identically."""
    from hybridpo.checkpoint import latest_checkpoint

    _, whole = pairs(name)
    run = tmp_path / "killed"
    _, _, (b2, a2) = CASES[name]
    # RLHF: a checkpoint at step 3 falls inside a 2-step reuse cycle, so the resumed step 4 trains on the saved samples
    save_every, kill_at = {"hypo": (2, 3), "rlhf": (3, 4)}[name]
    proc = start(2, *common(name, tiny_model_dir), f"run.out_dir={run}", f"optim.batch_size={b2}",
                 f"optim.grad_accum={a2}", f"run.save_every={save_every}")
    kill_after(proc, run, kill_at)
    finish(proc)
    first = latest_checkpoint(run)
    assert first is not None and int(first.name.split("-")[1]) < STEPS
    if name == "rlhf":
        assert first.name == "step-00000003"
        reused = [torch.load(first / f, weights_only=False)["reuse"] for f in ("method.pt", "method-1.pt")]
        assert reused[0][0]["prompts"] != reused[1][0]["prompts"]  # each rank's own samples
    rc, err = finish(start(2, "--resume", str(run)))
    assert rc == 0, err[-4000:]
    assert f"from {first.name}" in err
    assert max_weight_diff(whole / "final", run / "final") == 0.0  # bit for bit
    keys = {"hypo": ("loss", "kl", "lam", "response_length", "entropy"), "rlhf": ("loss", "kl", "reward", "ratio/mean")}
    for a, b in zip(rows(whole), rows(run), strict=True):  # the same samples: same KL, lengths, λ, rewards
        for key in keys[name]:
            assert a[key] == b[key], (a["step"], key)


def test_an_fsdp_config_is_refused_not_run_unsharded(tiny_model_dir, tmp_path):
    """accelerate turns an FSDP config into plain data parallel on CPU (MULTI_CPU); the loop says so."""
    from multi_runs import DDP

    proc = start(2, *common("dpo", tiny_model_dir), f"run.out_dir={tmp_path / 'run'}",
                 config=DDP.with_name("fsdp2.yaml"))
    rc, err = finish(proc)
    assert rc != 0
    assert "accelerate config asks for FSDP: the training loop does not shard the model yet" in err
    assert "MULTI_CPU" in err and not (tmp_path / "run" / "checkpoints").exists()
