"""`hybridpo bench speed`: each variant of each workload in a fresh process, then medians.

A variant runs in its own spawned interpreter so that its peak memory (the RSS high-water mark),
its kernel time and its page faults are its own, and so that nothing it allocates or caches
(allocator pools, thread pools, datasets caches) carries over to the next variant. Inside a run,
step 1 is the warm-up and is left out of the per-step medians (it still counts end to end).
"""

from __future__ import annotations

import importlib
import multiprocessing
import resource
import statistics
import traceback
from dataclasses import asdict, dataclass, field, replace
from queue import Empty

from hybridpo.bench.record import RunRecord, Unavailable
from hybridpo.bench.workloads import Workload, get_workload

# variant -> (runner module under hybridpo.bench, function, keyword arguments)
VARIANTS: dict[str, tuple[str, str, dict]] = {
    "hybridpo dpo": ("hybridpo_runner", "run_dpo", {"layout": "packed"}),
    "hybridpo dpo padded": ("hybridpo_runner", "run_dpo", {"layout": "padded"}),
    "hybridpo dpo precompute-ref": ("hybridpo_runner", "run_dpo", {"precompute": True}),
    "hybridpo dpo last-4": ("hybridpo_runner", "run_dpo", {"last_n": True}),
    "hybridpo dpo eager-elementwise": ("hybridpo_runner", "run_dpo", {"elementwise": "eager"}),
    "hybridpo dpo flash-kernel": ("hybridpo_runner", "run_dpo", {"span_kernel": "flash"}),
    "hybridpo dpo library-train-gemm": ("hybridpo_runner", "run_dpo", {"train_gemm": "library"}),
    "hybridpo hypo": ("hybridpo_runner", "run_hypo", {}),
    "hybridpo hypo separate-prompt": ("hybridpo_runner", "run_hypo", {"share_prompt": "off"}),
    "hybridpo hypo shared-prompt": ("hybridpo_runner", "run_hypo", {"share_prompt": "on"}),
    "hybridpo hypo eager-elementwise": ("hybridpo_runner", "run_hypo", {"elementwise": "eager"}),
    "hybridpo hypo library-gemm": ("hybridpo_runner", "run_hypo", {"decode_gemm": "library"}),
    "hybridpo hypo panels-gemm": ("hybridpo_runner", "run_hypo", {"decode_gemm": "panels"}),  # where auto keeps MKL's
    "hybridpo hypo flash-kernel": ("hybridpo_runner", "run_hypo", {"span_kernel": "flash"}),
    "hybridpo hypo library-train-gemm": ("hybridpo_runner", "run_hypo", {"train_gemm": "library"}),
    "hybridpo hypo library-gemm flash-kernel": ("hybridpo_runner", "run_hypo", {"decode_gemm": "library", "span_kernel": "flash"}),
    "hybridpo rlhf": ("hybridpo_runner", "run_rlhf", {}),
    "trl dpo ref-model": ("trl_runner", "run_dpo", {"precompute": False}),
    "trl dpo precompute-ref": ("trl_runner", "run_dpo", {"precompute": True}),
    "trl dpo ref-model last-4": ("trl_runner", "run_dpo", {"precompute": False, "last_n": True}),
    "trl rloo": ("trl_runner", "run_rloo", {}),
}

# workload -> the variants it compares
PLAN: dict[str, list[str]] = {
    "tiny": ["hybridpo dpo", "hybridpo dpo precompute-ref", "hybridpo dpo padded", "trl dpo ref-model", "trl dpo precompute-ref",
             "hybridpo rlhf", "trl rloo"],
    "tldr": ["hybridpo dpo", "hybridpo dpo precompute-ref", "trl dpo ref-model", "trl dpo precompute-ref"],
    "hypo": ["hybridpo dpo", "hybridpo hypo", "hybridpo hypo separate-prompt"],
    "hypo-160m": ["hybridpo dpo", "hybridpo hypo"],
    # the real SmolLM2-135M-Instruct on UltraFeedback: a pretrained Llama-family model
    "smollm2-dpo": ["hybridpo dpo", "hybridpo dpo last-4", "hybridpo dpo precompute-ref", "trl dpo ref-model",
                    "trl dpo precompute-ref", "trl dpo ref-model last-4"],
    "smollm2-hypo": ["hybridpo dpo", "hybridpo hypo", "hybridpo hypo separate-prompt", "hybridpo hypo shared-prompt"],
    "smollm2-rloo": ["hybridpo rlhf", "trl rloo"],
}
ALL_WORKLOADS = ["tiny", "tldr", "hypo"]  # what `--workload all` runs
SMOLLM2_WORKLOADS = ["smollm2-dpo", "smollm2-hypo", "smollm2-rloo"]  # what `--workload smollm2` runs


@dataclass
class Summary:
    """One table row: the medians over repeats of one variant on one workload."""

    variant: str
    workload: str
    status: str  # "ok", or why it did not run ("unavailable: ...", "error: ...")
    step_s: float = float("nan")  # median step time after the warm-up step
    pairs_per_s: float = float("nan")  # pairs (prompts for RLOO) per second in steady state
    e2e_pairs_per_s: float = float("nan")  # all steps' pairs / (precompute + every step incl. warm-up)
    completions_per_s: float = float("nan")  # online samples per second (HyPO, RLOO)
    tokens_per_s: float = float("nan")  # unique real tokens (prompt once + responses) per second of the timed steps
    precompute_s: float = 0.0  # one-off reference precompute
    peak_rss_gb: float = float("nan")  # process high-water mark, max over repeats
    rss_growth_gb: float = float("nan")  # resident memory after the last step minus after the first, median over repeats
    sys_share: float = float("nan")  # kernel CPU time / all CPU time
    minor_faults: float = float("nan")  # page faults per run
    loss_1: float = float("nan")  # loss of step 1 (equal weights and ref: log 2 for DPO)
    loss_2: float = float("nan")  # loss of step 2, after one update: the work-is-the-same check
    logps_chosen_1: float = float("nan")  # batch mean log π(chosen) at step 1
    flops_per_s: float = float("nan")  # needed FLOPs / seconds of the timed steps
    flops_frac: float = float("nan")  # flops_per_s over the matmul peak measured in the run's own process (else around all runs)
    run_peak: float = float("nan")  # the matmul peak measured in each run's process, around its steps
    step_flops: float = float("nan")  # FLOPs a step needs (hybridpo.bench.flops), mean over the timed steps
    phase_share: dict[str, float] = field(default_factory=dict)  # share of the median step per timed phase
    note: str = ""  # the runner's description of the code path
    records: list[dict] = field(default_factory=list)  # raw RunRecords, one per repeat


def _child(variant: str, workload: Workload, threads: int, queue) -> None:
    """Runs in a spawned process: one variant, one workload; puts (status, payload) on the queue."""
    import torch
    import transformers

    torch.set_num_threads(threads)
    transformers.logging.set_verbosity_error()
    from hybridpo.bench.flops import matmul_peak

    try:
        module, function, kwargs = VARIANTS[variant]
        runner = getattr(importlib.import_module(f"hybridpo.bench.{module}"), function)
        before = matmul_peak(threads, device=workload.device, precision=workload.precision)
        record: RunRecord = runner(workload, **kwargs)
        # the machine's rate during this run: a shared machine drifts between runs, so each run's
        # FLOP share is taken against the peak measured in its own process, around its steps
        record.peak_flops = max(before, matmul_peak(threads, device=workload.device, precision=workload.precision))
    except Unavailable as err:
        queue.put(("unavailable", str(err)))
        return
    except Exception:  # reported in the table, the other variants still run
        queue.put(("error", traceback.format_exc(limit=6)))
        return
    usage = resource.getrusage(resource.RUSAGE_SELF)
    record.peak_rss_bytes = usage.ru_maxrss * 1024  # Linux reports KiB
    record.user_s, record.sys_s, record.minor_faults = usage.ru_utime, usage.ru_stime, usage.ru_minflt
    queue.put(("ok", asdict(record)))


def _peak_child(threads: int, device: str, precision: str, queue) -> None:
    from hybridpo.bench.flops import matmul_peak

    queue.put(("ok", matmul_peak(threads, device=device, precision=precision)))


def _spawn(target, *args):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    while True:  # get before join: a large payload would block the child's exit
        try:
            status, payload = queue.get(timeout=5.0)
            break
        except Empty:
            if not proc.is_alive():  # killed (e.g. out of memory) or crashed before reporting
                status, payload = "error", f"process exited with code {proc.exitcode} and no result"
                break
    proc.join()
    return status, payload


def measure_peak(threads: int, device: str = "cpu", precision: str = "fp32") -> float:
    """This machine's matmul FLOP/s on `threads` threads (fp32 on CPU), measured in a fresh process."""
    return _spawn(_peak_child, threads, device, precision)[1]


def run_once(variant: str, workload: Workload, threads: int) -> RunRecord | str:
    """One fresh-process run of a variant: its RunRecord, or a status line saying why it did not run."""
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r}; choose from {sorted(VARIANTS)}")
    status, payload = _spawn(_child, variant, workload, threads)
    return RunRecord(**payload) if status == "ok" else f"{status}: {payload.strip()}"


def _one_line(r: RunRecord) -> str:
    steps = ", ".join(f"{t:.2f}" for t in r.step_s)
    rss = ", ".join(f"{b / 1e9:.2f}" for b in r.rss_bytes)
    return f"steps [{steps}] s, precompute {r.precompute_s:.1f} s, peak RSS {r.peak_rss_bytes / 1e9:.2f} GB, RSS after each step [{rss}] GB"


def summarize(records: list[RunRecord], peak_flops: float) -> Summary:
    """Medians over repeats of each run's steady-state numbers (step 1 excluded when there are more)."""
    first = records[0]
    step_s, e2e, tokens, rates, flops, needed = [], [], [], [], [], []
    for r in records:
        timed = slice(1, None) if len(r.step_s) > 1 else slice(None)
        step_s.append(statistics.median(r.step_s[timed]))
        e2e.append(r.pairs_per_step * len(r.step_s) / (r.precompute_s + sum(r.step_s)))
        # rates over the same timed steps in numerator and denominator: the steps' batches differ
        # in length, and a median step need not be the step of median work
        seconds = sum(r.step_s[timed])
        tokens.append(sum(r.tokens[timed]) / seconds)
        rates.append(sum(r.flops[timed]) / seconds)
        peak = r.peak_flops or peak_flops  # the run's own, else the one measured around all runs
        flops.append(rates[-1] / peak if peak > 0 else float("nan"))
        needed.append(statistics.fmean(r.flops[timed]))
    step = statistics.median(step_s)
    phases = {}
    timed_phases = first.phase_s[1:] if len(first.phase_s) > 1 else first.phase_s
    for name in dict.fromkeys(n for p in timed_phases for n in p):
        phases[name] = statistics.median(p.get(name, 0.0) for p in timed_phases) / step_s[0]
    cpu = [r.user_s + r.sys_s for r in records]
    return Summary(
        variant=first.variant,
        workload=first.workload,
        status="ok",
        step_s=step,
        pairs_per_s=first.pairs_per_step / step,
        e2e_pairs_per_s=statistics.median(e2e),
        completions_per_s=first.completions_per_step / step if first.completions_per_step else float("nan"),
        tokens_per_s=statistics.median(tokens),
        precompute_s=statistics.median(r.precompute_s for r in records),
        peak_rss_gb=max(r.peak_rss_bytes for r in records) / 1e9,
        rss_growth_gb=(statistics.median((r.rss_bytes[-1] - r.rss_bytes[0]) / 1e9 for r in records)
                       if all(len(r.rss_bytes) > 1 for r in records) else float("nan")),
        sys_share=statistics.median(r.sys_s / c for r, c in zip(records, cpu) if c > 0) if any(cpu) else float("nan"),
        minor_faults=statistics.median(r.minor_faults for r in records),
        loss_1=first.losses[0] if first.losses else float("nan"),
        loss_2=first.losses[1] if len(first.losses) > 1 else float("nan"),
        logps_chosen_1=first.logps_chosen[0] if first.logps_chosen else float("nan"),
        flops_per_s=statistics.median(rates),
        flops_frac=statistics.median(flops),
        run_peak=statistics.median(r.peak_flops for r in records) if all(r.peak_flops for r in records) else float("nan"),
        step_flops=statistics.median(needed),
        phase_share=phases,
        note=first.note,
        records=[asdict(r) for r in records],
    )


def resummarize(payload: dict) -> list[Summary]:
    """The rows of a written speed.json summarized again from their runs' records (a report's
    reading can change after the runs); failed variants keep their status."""
    rows = []
    for row in payload["rows"]:
        if row["status"] != "ok":
            rows.append(Summary(row["variant"], row["workload"], row["status"]))
        else:
            rows.append(summarize([RunRecord(**r) for r in row["records"]], payload["peak_flops"]))
    return rows


def _enough_pairs(w: Workload) -> Workload:
    """More steps than the workload's pairs cover (a longer run, e.g. to watch memory over steps)
    take the next pairs of the same data."""
    return replace(w, n_pairs=max(w.n_pairs, w.steps * w.batch_pairs))


def run_speed(
    workloads: list[str],
    threads: int = 2,
    repeats: int = 3,
    variants: list[str] | None = None,
    overrides: dict | None = None,
    progress=None,
) -> tuple[float, list[Summary]]:
    """Every planned variant of each workload; returns (matmul peak FLOP/s, one Summary per variant).

    `variants` runs those names on each workload (default: its plan); `overrides` replaces Workload
    fields (tests use it to shorten runs); `progress(line)` is called before each variant.
    """
    chosen = [_enough_pairs(replace(get_workload(name), **(overrides or {}))) for name in workloads]
    where = (chosen[0].device, chosen[0].precision)
    peak = measure_peak(threads, *where)
    all_runs = []
    for workload in chosen:
        name = workload.name
        planned = PLAN[name] if variants is None else list(variants)
        runs: dict[str, list[RunRecord]] = {v: [] for v in planned}
        failed: dict[str, str] = {}
        # repeats go round-robin over the variants, so a drift in the machine's load hits all alike
        for repeat in range(repeats):
            for variant in planned:
                if variant in failed:
                    continue
                if progress:
                    progress(f"[{name}] {variant} (run {repeat + 1}/{repeats}) ...")
                out = run_once(variant, workload, threads)
                if isinstance(out, str):
                    failed[variant] = out
                else:
                    runs[variant].append(out)
                if progress:
                    progress(f"    {out.splitlines()[-1] if isinstance(out, str) else _one_line(out)}")
        all_runs.append((name, planned, runs, failed))
    # other load on the machine only lowers a measured peak: keep the better of before and after
    peak = max(peak, measure_peak(threads, *where))
    rows = []
    for name, planned, runs, failed in all_runs:
        for variant in planned:
            rows.append(Summary(variant, name, failed[variant]) if variant in failed else summarize(runs[variant], peak))
    return peak, rows
