"""What one run of one benchmark variant reports back (filled by a runner, read by `speed`)."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field

from hybridpo.fast.kernels import cpuinfo_fields


class Unavailable(RuntimeError):
    """A variant cannot run here (optional dependency missing, method not built yet); says why."""


@dataclass
class RunRecord:
    variant: str  # e.g. "hybridpo dpo", "trl dpo ref-model"
    workload: str  # key of hybridpo.bench.workloads.WORKLOADS
    pairs_per_step: int  # preference pairs (DPO, HyPO) or prompts (RLOO) per optimiser step
    completions_per_step: int = 0  # online samples per step (HyPO, RLOO); 0 for offline DPO
    step_s: list[float] = field(default_factory=list)  # wall time of each step; step 1 is the warm-up
    precompute_s: float = 0.0  # one-off work before step 1 that the run needs (reference log-probs)
    losses: list[float] = field(default_factory=list)  # training loss of each step, as the trainer saw it
    logps_chosen: list[float] = field(default_factory=list)  # batch mean of log π(chosen) at each step
    tokens: list[int] = field(default_factory=list)  # unique real tokens of each step (prompt once + responses)
    flops: list[int] = field(default_factory=list)  # FLOPs each step needs (hybridpo.bench.flops)
    phase_s: list[dict[str, float]] = field(default_factory=list)  # per step: wall time of each timed phase (hybridpo only)
    rss_bytes: list[int] = field(default_factory=list)  # resident memory after each step (heap growth shows here)
    note: str = ""  # how the variant ran (code path, settings that matter for fairness)
    # filled by speed's child process wrapper:
    peak_rss_bytes: int = 0  # high-water mark of the whole process (ru_maxrss)
    user_s: float = 0.0  # CPU time in user mode over the whole process
    sys_s: float = 0.0  # CPU time in the kernel over the whole process
    minor_faults: int = 0  # page faults served without I/O (allocator churn shows here)
    peak_flops: float = 0.0  # this process's matmul FLOP/s, the better of before its run and after it (0: not measured)


def current_rss() -> int:
    """This process's resident memory now, in bytes (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def describe_cpu(cpuinfo: str) -> str | None:
    """The first processor of a /proc/cpuinfo text as "model name (family F, model M, vectors)",
    vectors the widest set our kernels care about (AVX-512, AVX2); None without a model name."""
    fields = cpuinfo_fields(cpuinfo)
    if "model name" not in fields:
        return None
    flags = fields.get("flags", "").split()
    vectors = "AVX-512" if "avx512f" in flags else ("AVX2" if "avx2" in flags else "no AVX2")
    return f"{fields['model name']} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')}, {vectors})"


def machine(device: str = "cpu") -> str:
    """The machine a benchmark ran on, for its table: the CPU (Intel and AMD rates differ, and so do
    AMD's generations under one "AMD EPYC" name; our kernels need AVX-512), logical CPUs, OS, and
    the GPU when `device` is CUDA."""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = describe_cpu(f.read())
    except OSError:
        cpu = None
    cpu = cpu or platform.processor() or platform.machine()
    gpu = ""
    if device.startswith("cuda"):
        import torch

        gpu = f"; GPU {torch.cuda.get_device_name(0)}"
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}{gpu}"
