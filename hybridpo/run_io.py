"""What a training run writes and hears: metrics.jsonl / TensorBoard rows, and stop signals.

Side effects only (STYLE habit 8): the loop owns the objects, this module owns how they behave.
"""

from __future__ import annotations

import json
import signal
from contextlib import contextmanager
from pathlib import Path

import torch


class MetricsLog:
    """metrics.jsonl rows {"step": s, ...} (main process), mirrored to TensorBoard when asked."""

    def __init__(self, run_dir: Path, main: bool, tensorboard: bool):
        self.main = main
        self.path = run_dir / "metrics.jsonl"
        self.tb = None
        if main and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ImportError("run.tensorboard=true needs the tensorboard package: pip install tensorboard") from None
            self.tb = SummaryWriter(str(run_dir / "tensorboard"))

    def write(self, step: int, row: dict) -> None:
        if not self.main:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **row}) + "\n")
        if self.tb is not None:
            for k, v in row.items():
                self.tb.add_scalar(k, v, step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def truncate_metrics(path: Path, step: int) -> None:
    """Drop rows a killed run logged after its last checkpoint (the resumed run logs them again)."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line torn by a kill mid-write
            continue
        if row["step"] <= step:
            kept.append(line)
    path.write_text("".join(r + "\n" for r in kept))


class StopFlag:
    """SIGTERM / Ctrl-C set a flag; the loop finishes the step, checkpoints and returns."""

    def __init__(self):
        self.signum: int | None = None

    def _handler(self, signum, frame):
        if self.signum is not None:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signum = signum

    @contextmanager
    def installed(self):
        previous = {s: signal.signal(s, self._handler) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    def poll(self, accelerator) -> None:
        """Make every process agree: any process signalled -> all stop after this step."""
        if accelerator.num_processes > 1:
            flag = torch.tensor([self.signum or 0], device=accelerator.device)
            flag = accelerator.reduce(flag, reduction="sum")
            if int(flag) and self.signum is None:
                self.signum = signal.SIGTERM
