"""Helpers of the multi-process tests: `hybridpo train` in 1 process or under `accelerate launch`
with configs/accelerate/ddp.yaml (N CPU processes over gloo), and what the runs wrote."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"
PYTHIA_TOKENIZER = SHARED / "tokenizers" / "pythia" / "tokenizer.json"
ACCELERATE = Path(sys.executable).with_name("accelerate")
DDP = REPO / "configs" / "accelerate" / "ddp.yaml"

# tiny and fast on 2 cores: 16 TL;DR pairs, prompts cut to their last 24 tokens, constant lr
FAST = ["run.progress=false", "data.recipe=tldr", "data.max_prompt_length=24", "data.max_response_length=12",
        "data.max_rows=16", "data.max_eval_rows=4", "run.eval_examples=4", "optim.schedule=constant",
        "optim.warmup_steps=0", "optim.lr=1e-3"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command(processes: int, *args: str, config: Path = DDP) -> list[str]:
    if processes == 1:
        return [sys.executable, "-m", "hybridpo.cli", "train", *args]
    return [str(ACCELERATE), "launch", "--config_file", str(config), "--num_processes", str(processes),
            "--main_process_port", str(_free_port()), "-m", "hybridpo.cli", "train", *args]


def start(processes: int, *args: str, config: Path = DDP) -> subprocess.Popen:
    """`hybridpo train ARGS` in `processes` processes, in a session of its own (so a kill reaches all)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(Path(__file__).parent)])}
    return subprocess.Popen(command(processes, *args, config=config), cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def train(processes: int, *args: str) -> str:
    """Run to the end; returns stderr (asserting exit 0)."""
    rc, err = finish(start(processes, *args))
    assert rc == 0, err[-4000:]
    return err


def rows(run: Path) -> list[dict]:
    """metrics.jsonl's training rows."""
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def eval_rows(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "eval/loss" in r]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


def max_weight_diff(a: Path, b: Path) -> float:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    return max(float((wa[k] - wb[k]).abs().max()) for k in wa)


def kill_after(proc: subprocess.Popen, run: Path, steps: int) -> None:
    """SIGKILL every process of the run (the launcher and its workers, which torchrun starts in
    sessions of their own) once it has logged `steps` steps."""
    import psutil

    deadline = time.time() + 240
    while not (run / "metrics.jsonl").exists() or len(rows(run)) < steps:
        assert proc.poll() is None, f"the run ended before step {steps}: {proc.communicate()[1][-3000:]}"
        assert time.time() < deadline
        time.sleep(0.02)
    launcher = psutil.Process(proc.pid)
    for p in [launcher, *launcher.children(recursive=True)]:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
