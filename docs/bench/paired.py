"""What the paired measurements (docs/bench/*_paired.py) share: one batch of a SmolLM2 workload
loaded as the training runs load it, and two settings alternated in one process, so that a drift
of the machine's load hits both alike."""

import torch

from hybridpo.bench.workloads import batches, build_model, build_pairs, get_workload, load_tokenizer
from hybridpo.fast.cpu_memory import keep_freed_memory


def setup(workload: str, batch: int):
    """(workload, tokenizer, model in training mode, the workload's batch `batch`), on 2 threads with
    freed memory kept, as `hybridpo train` on CPU."""
    torch.set_num_threads(2)
    keep_freed_memory()
    w = get_workload(workload)
    tokenizer = load_tokenizer(w)
    pairs = build_pairs(w, tokenizer)
    return w, tokenizer, build_model(w).train(), batches(w, pairs)[batch]


def alternate(settings: tuple[str, ...], step, repeats: int) -> dict[str, list]:
    """step(setting, repeat) for every setting once as a warm-up (compiles, the heap grown to the
    step's size), then `repeats` rounds over the settings in turn; the timed results per setting."""
    for s in settings:
        step(s, 0)
    times = {s: [] for s in settings}
    for r in range(repeats):
        for s in settings:
            times[s].append(step(s, r + 1))
    return times


def table(setting: str, phases: list[str], times: dict[str, list]) -> None:
    """Print the markdown table: per setting the median of each phase's seconds (the last phase
    being the total), then every repeat's total."""
    import statistics

    print(f"| {setting} | " + " | ".join(f"{p} s" for p in phases) + " | every total s |")
    print("|---|" + "---:|" * (len(phases) + 1))
    for s, runs in times.items():
        cols = [statistics.median(c) for c in zip(*runs)]
        print(f"| {s} | " + " | ".join(f"{c:.2f}" for c in cols) + " | " + ", ".join(f"{t[-1]:.2f}" for t in runs) + " |")
