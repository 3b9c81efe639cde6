"""Checkpoints and resume with real signals to a real `python -m hybridpo.cli train` process.

The claim: on CPU, a run killed mid-training and resumed ends with exactly (bit for bit) the
weights of the same run left alone, and logs the same loss at every step. One run is killed
twice: SIGKILL (no chance to save: it restarts from its last periodic checkpoint and redoes the
lost steps), then, resumed, SIGTERM (it saves a checkpoint at the step it was at).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from hybridpo.checkpoint import latest_checkpoint

REPO = Path(__file__).resolve().parents[2]
STEPS = 24


def config(tmp_path: Path, model_dir: Path) -> Path:
    path = tmp_path / "dpo.yaml"
    path.write_text(f"""
method: dpo
method_args: {{beta: 0.1}}
model: {{name_or_path: {model_dir}, reference: copy}}
data: {{recipe: tldr, max_prompt_length: 24, max_response_length: 12, max_rows: 16, max_eval_rows: 4}}
optim: {{lr: 1.0e-3, schedule: cosine, warmup_steps: 3, batch_size: 2, grad_accum: 2, max_steps: {STEPS}}}
run: {{save_every: 4, keep_checkpoints: 2, progress: false, eval_examples: 4}}
""")
    return path


def start(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}  # same threads in every run
    return subprocess.Popen([sys.executable, "-m", "hybridpo.cli", "train", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def logged_steps(run: Path) -> int:
    path = run / "metrics.jsonl"
    if not path.exists():
        return 0
    return sum(1 for line in path.read_text().splitlines() if '"loss"' in line)


def kill_after(proc: subprocess.Popen, run: Path, steps: int, sig: int) -> None:
    deadline = time.time() + 240
    while logged_steps(run) < steps:
        assert proc.poll() is None, f"the run ended before step {steps}: {proc.communicate()[1][-2000:]}"
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(sig)


def final_weights(run: Path) -> dict:
    ckpt = latest_checkpoint(run)
    assert ckpt.name == f"step-{STEPS:08d}"
    return load_file(ckpt / "model" / "model.safetensors")


def losses(run: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


@pytest.fixture(scope="module")
def uninterrupted(tiny_model_dir, tmp_path_factory) -> tuple[Path, Path]:
    tmp = tmp_path_factory.mktemp("resume")
    cfg = config(tmp, tiny_model_dir)
    run = tmp / "whole"
    rc, err = finish(start("--config", str(cfg), f"run.out_dir={run}"))
    assert rc == 0, err[-3000:]
    return cfg, run


def test_killed_run_resumes_to_identical_weights(uninterrupted, tmp_path):
    cfg, whole = uninterrupted
    run = tmp_path / "killed"

    # 1. SIGKILL: no chance to save; the run restarts from its last periodic checkpoint (every 4)
    proc = start("--config", str(cfg), f"run.out_dir={run}")
    kill_after(proc, run, 6, signal.SIGKILL)
    rc, _ = finish(proc)
    assert rc == -signal.SIGKILL
    first = latest_checkpoint(run)
    assert int(first.name.split("-")[1]) % 4 == 0 and int(first.name.split("-")[1]) < STEPS

    # 2. resume, then SIGTERM: the run checkpoints the step it had reached and exits 128 + 15
    proc = start("--resume", str(run))
    kill_after(proc, run, 14, signal.SIGTERM)
    rc, err = finish(proc)
    assert f"from {first.name}" in err
    assert rc == 128 + signal.SIGTERM, err[-3000:]
    assert "stopped by signal 15 at step" in err
    second = latest_checkpoint(run)
    assert int(second.name.split("-")[1]) == logged_steps(run) >= 14
    assert int(second.name.split("-")[1]) < STEPS

    # 3. resume to the end: bit-identical weights, every step logged once with the same loss
    rc, err = finish(start("--resume", str(run)))
    assert rc == 0, err[-3000:]
    assert f"from {second.name}" in err
    expected, got = final_weights(whole), final_weights(run)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    assert losses(run) == losses(whole)


def test_resume_needs_a_checkpoint_and_a_new_run_refuses_an_old_folder(uninterrupted, tmp_path):
    cfg, whole = uninterrupted
    from hybridpo.cli import main

    assert main(["train", "--config", str(cfg), f"run.out_dir={whole}"]) == 1  # would overwrite a run
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.yaml").write_text((whole / "config.yaml").read_text())
    assert main(["train", "--resume", str(tmp_path / "empty")]) == 1  # nothing to resume from
