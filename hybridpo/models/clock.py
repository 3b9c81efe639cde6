"""Wall time per phase of a training step, shared by the model roles, the loop and the benchmark."""

from __future__ import annotations

import time
from contextlib import contextmanager


class StepClock:
    """Seconds per phase ("policy forward", "sampling", "reference forward", "reward", "backward",
    "clip + optimizer") since the last `reset`, and the lengths of the samples drawn."""

    def __init__(self):
        self.phases: dict[str, float] = {}  # phase name -> seconds this step
        self.sample_lengths: list[list[int]] = []  # per prompt sampled this step: its samples' lengths

    @contextmanager
    def time(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - start

    def reset(self) -> None:
        self.phases, self.sample_lengths = {}, []
