"""Checkpoints: everything a killed run needs to continue bit-for-bit, written atomically.

Layout of RUN/checkpoints/step-00000040/:
    model/          save_pretrained of the trained model (a LoRA adapter, or the full weights)
    optimizer.pt    AdamW state (moments, step counts)
    scheduler.pt    learning-rate schedule state
    rng-<rank>.pt   torch / CUDA / numpy / random states and the sampling generator, per process
    method.pt       the method's own state (e.g. a dual variable), maybe empty; method-<rank>.pt for
                    the other processes (a method's state may differ by process, e.g. RLHF's reused
                    samples of its own micro-batches; a dual variable is the same on every rank)
    state.json      step, data position (examples consumed), written last
RUN/checkpoints/latest holds the name of the newest complete checkpoint.

Atomic: a checkpoint is written into a hidden staging folder and renamed into place (os.replace is
atomic on one filesystem); `latest` is rewritten the same way afterwards. A kill at any point
leaves the previous checkpoint whole and `latest` pointing at a complete folder. With several
processes, every process writes its own files into the one staging folder, all wait, and only then
does the main process (rank 0) write state.json and rename: a checkpoint is visible only once every
process's part is in it, and the model, optimizer and schedule (the same on every rank under DDP)
are written once, by the main process. The run folder must be on a filesystem every process sees.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

LATEST = "latest"


def checkpoint_root(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(
    run_dir: Path, *, step: int, position: int, model, optimizer, scheduler, method_state: dict,
    generator: torch.Generator, keep: int = 2, rank: int = 0, barrier=lambda: None,
) -> Path:
    """Write checkpoint `step` atomically. Called by every process with its `rank` and a `barrier`
    that waits for all of them (accelerator.wait_for_everyone); one process: the defaults."""
    root = checkpoint_root(run_dir)
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-step-{step:08d}"
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    barrier()  # the staging folder exists
    torch.save(_rng_state(generator), tmp / f"rng-{rank}.pt")
    torch.save(method_state, tmp / _method_file(rank))
    if rank == 0:
        model.save_pretrained(tmp / "model", safe_serialization=True)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    barrier()  # every process's part is in
    if rank == 0:
        _write_json(tmp / "state.json", {"step": step, "position": position})
        if final.exists():  # the same step saved twice (e.g. a signal right after a periodic save)
            shutil.rmtree(final)
        os.replace(tmp, final)
        atomic_write(root / LATEST, final.name)
        _prune(root, keep)
    barrier()  # visible to all before anyone goes on
    return final


def _method_file(rank: int) -> str:
    return "method.pt" if rank == 0 else f"method-{rank}.pt"


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint, or None."""
    root = checkpoint_root(run_dir)
    pointer = root / LATEST
    if pointer.exists():
        path = root / pointer.read_text().strip()
        if (path / "state.json").exists():
            return path
    done = sorted(p for p in root.glob("step-*") if (p / "state.json").exists()) if root.exists() else []
    return done[-1] if done else None


def load_checkpoint(path: Path, *, model, optimizer, scheduler, generator: torch.Generator, rank: int = 0) -> tuple[dict, dict]:
    """Restore model weights, optimizer, scheduler and RNG from `path`; returns (state, method_state)."""
    path = Path(path)
    load_model_weights(model, path / "model")
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    rng_file = path / f"rng-{rank}.pt"
    if not rng_file.exists():
        raise FileNotFoundError(f"{rng_file} missing: resume with the same number of processes as the run")
    _set_rng_state(torch.load(rng_file, weights_only=False), generator)
    state = json.loads((path / "state.json").read_text())
    method_file = path / _method_file(rank)
    if not method_file.exists():
        raise FileNotFoundError(f"{method_file} missing: resume with the same number of processes as the run")
    return state, torch.load(method_file, weights_only=False)


def load_model_weights(model, folder: Path) -> None:
    """Load a save_pretrained folder back into the live model (adapter or full weights)."""
    folder = Path(folder)
    if hasattr(model, "peft_config"):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(folder / "adapter_model.safetensors"))
        return
    # through from_pretrained: save_pretrained may store keys under the checkpoint's historical
    # names (GPT-NeoX's lm_head is saved as embed_out), which only the loader maps back. This
    # holds a second copy of the weights for a moment, at resume only.
    loaded = type(model).from_pretrained(folder, dtype=next(model.parameters()).dtype)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    lost = sorted(trainable & set(missing))
    if lost or unexpected:
        raise ValueError(f"{folder}: weights do not match the model (missing {lost[:5]}, unexpected {unexpected[:5]})")


def _rng_state(generator: torch.Generator) -> dict:
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "generator": generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _prune(root: Path, keep: int) -> None:
    done = sorted(p for p in root.glob("step-*") if (p / "state.json").exists())
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-step-*"):  # left by a save that died (this one is renamed by now)
        shutil.rmtree(stale, ignore_errors=True)


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj))


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
