"""The `bench speed` table and its speed bars (the targets against TRL below: DPO_BARS, HYPO_BARS,
HYPO_RSS_GB, RLOO_BARS), as markdown text (no I/O here)."""

from __future__ import annotations

import math
import statistics

from hybridpo.bench.speed import Summary

HYBRIDPO_DPO = ("hybridpo dpo", "hybridpo dpo precompute-ref", "hybridpo dpo padded", "hybridpo dpo last-4")  # first: the default
TRL_DPO = ("trl dpo ref-model", "trl dpo precompute-ref", "trl dpo ref-model last-4")
# workload -> (DPO e2e pairs/s over TRL's best, at least; peak RSS share of TRL's lowest, at most, or None;
#              share of the matmul peak on the needed FLOPs, at least, or None)
DPO_BARS = {"tiny": (1.5, None, None), "tldr": (3.0, 0.5, 0.5), "smollm2-dpo": (4.0, 0.5, 0.6)}
# workload -> the HyPO bar: ("step", x) HyPO step / DPO step <= x; ("flops", x) <= x times the needed-FLOP ratio
HYPO_BARS = {"hypo": ("step", 1.5), "smollm2-hypo": ("flops", 1.1)}
HYPO_RSS_GB = {"smollm2-hypo": 10.0}  # workload -> HyPO (full fine-tune) peak RSS, at most
RLOO_BARS = {"tiny": 2.0}  # workload -> RLOO completions/s over TRL's, at least (others: reported)
LOSS_TOLERANCE = 1e-5  # hybridpo and TRL must agree this closely after one update (fp32)

COLUMNS = [
    ("variant", "variant", "{}"),
    ("step s", "step_s", "{:.3f}"),
    ("pairs/s", "pairs_per_s", "{:.2f}"),
    ("e2e pairs/s", "e2e_pairs_per_s", "{:.2f}"),
    ("compl/s", "completions_per_s", "{:.1f}"),
    ("tokens/s", "tokens_per_s", "{:.0f}"),
    ("precompute s", "precompute_s", "{:.1f}"),
    ("peak RSS GB", "peak_rss_gb", "{:.2f}"),
    ("RSS growth GB", "rss_growth_gb", "{:+.2f}"),
    ("sys CPU %", "sys_share", "{:.0%}"),
    ("page faults", "minor_faults", "{:.3g}"),
    ("loss@1", "loss_1", "{:.7f}"),
    ("loss@2", "loss_2", "{:.7f}"),
    ("logps/chosen@1", "logps_chosen_1", "{:.4f}"),
    ("FLOP/s % peak", "flops_frac", "{:.1%}"),
    ("run peak GFLOP/s", "run_peak", "{:.0f}"),
    ("GFLOP/step", "step_flops", "{:.0f}"),
]


def _cell(fmt: str, value) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    if fmt == "{:.0f}" and value > 1e6:  # FLOPs are shown in GFLOP
        value = value / 1e9
    return fmt.format(value)


def table(rows: list[Summary]) -> str:
    lines = ["| " + " | ".join(h for h, _, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        if row.status != "ok":
            reason = row.status.splitlines()[-1][:160].replace("|", "/")
            lines.append(f"| {row.variant} | " + " | ".join(["-"] * (len(COLUMNS) - 2)) + f" | {reason} |")
            continue
        lines.append("| " + " | ".join(_cell(fmt, getattr(row, key)) for _, key, fmt in COLUMNS) + " |")
    return "\n".join(lines)


def _get(rows: list[Summary], workload: str, variant: str) -> Summary | None:
    for row in rows:
        if row.workload == workload and row.variant == variant and row.status == "ok":
            return row
    return None


def _verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def bars(rows: list[Summary]) -> list[str]:
    """The speed bars (DPO_BARS, HYPO_BARS, HYPO_RSS_GB, RLOO_BARS) that these rows can decide, one line each; bars without data are skipped."""
    lines = []
    for workload, (need, rss_share, flops_share) in DPO_BARS.items():
        lines += _dpo_bars(rows, workload, need, rss_share, flops_share)
    for workload in dict.fromkeys(r.workload for r in rows):  # in table order
        lines += _hypo_bars(rows, workload)
        lines += _rloo_bars(rows, workload)
    return lines


def _dpo_bars(rows, workload, need, rss_share, flops_share) -> list[str]:
    lines = []
    ours_all = [r for v in HYBRIDPO_DPO if (r := _get(rows, workload, v))]
    theirs = [r for v in TRL_DPO if (r := _get(rows, workload, v))]
    if ours_all and theirs:
        ours = max(ours_all, key=lambda r: r.e2e_pairs_per_s)
        best = max(theirs, key=lambda r: r.e2e_pairs_per_s)
        ratio = ours.e2e_pairs_per_s / best.e2e_pairs_per_s
        lines.append(f"{workload}: DPO e2e pairs/s, hybridpo's best ({ours.variant}) {ours.e2e_pairs_per_s:.2f} "
                     f"vs TRL's best ({best.variant}) {best.e2e_pairs_per_s:.2f} = {ratio:.2f}x "
                     f"(bar >= {need}x): {_verdict(ratio >= need)}")
        for kind, pick in (("every weight trained", lambda r: "last-" not in r.variant),
                           ("last blocks trained", lambda r: "last-" in r.variant)):
            mine, other = [r for r in ours_all if pick(r)], [r for r in theirs if pick(r)]
            if mine and other and (len(mine) < len(ours_all) or len(other) < len(theirs)):
                a, b = max(mine, key=lambda r: r.e2e_pairs_per_s), max(other, key=lambda r: r.e2e_pairs_per_s)
                lines.append(f"{workload}: like for like, {kind}: {a.variant} {a.e2e_pairs_per_s:.2f} vs {b.variant} "
                             f"{b.e2e_pairs_per_s:.2f} e2e pairs/s = {a.e2e_pairs_per_s / b.e2e_pairs_per_s:.2f}x")
        for r in theirs:
            same = [o for o in ours_all if ("last-" in o.variant) == ("last-" in r.variant)]
            if not same:
                continue
            diff = abs(same[0].loss_2 - r.loss_2)
            lines.append(f"{workload}: |loss@2 {same[0].variant} - {r.variant}| = {diff:.2e} (same work if "
                         f"<= {LOSS_TOLERANCE:g}): {'same' if diff <= LOSS_TOLERANCE else 'DIFFERENT'}")
        if rss_share is not None and ours_all and theirs and any(
                ("last-" in o.variant) == ("last-" in t.variant) for o in ours_all for t in theirs):
            # like for like: every weight trained where both sides ran it, else the last blocks
            kinds = [[(o, t) for o in ours_all if ("last-" in o.variant) == last for t in theirs
                      if ("last-" in t.variant) == last] for last in (False, True)]
            pairs = kinds[0] or kinds[1]
            ours_low = min((o for o, _ in pairs), key=lambda r: r.peak_rss_gb)
            lowest = min((t for _, t in pairs), key=lambda r: r.peak_rss_gb)
            share = ours_low.peak_rss_gb / lowest.peak_rss_gb
            trained = "every weight trained" if kinds[0] else "last blocks trained"
            lines.append(f"{workload}: peak RSS, like for like ({trained}), hybridpo's lowest ({ours_low.variant}) "
                         f"{ours_low.peak_rss_gb:.2f} GB "
                         f"vs TRL's lowest ({lowest.variant}) {lowest.peak_rss_gb:.2f} GB = {share:.0%} "
                         f"(bar <= {rss_share:.0%}): {_verdict(share <= rss_share)}")
    steady = _get(rows, workload, "hybridpo dpo")
    if flops_share is not None and steady:
        lines.append(f"{workload}: hybridpo dpo reaches {steady.flops_frac:.1%} of the matmul peak on the needed "
                     f"FLOPs (bar >= {flops_share:.0%}): {_verdict(steady.flops_frac >= flops_share)}")
    return lines


def _hypo_bars(rows, workload) -> list[str]:
    """HyPO's time over DPO's, read on the same timed batches when both ran the same steps (the
    needed-FLOP ratio is a ratio of means over those batches); the median steps are a cross-check."""
    dpo, hypo = _get(rows, workload, "hybridpo dpo"), _get(rows, workload, "hybridpo hypo")
    lines = []
    if dpo and hypo:
        medians = hypo.step_s / dpo.step_s
        needed = hypo.step_flops / dpo.step_flops  # the step-time ratio if both ran at the same FLOP/s
        matched = _batch_for_batch(dpo, hypo)
        ratio = medians if matched is None else matched
        kind, bar = HYPO_BARS.get(workload, (None, None))
        if kind == "step":
            verdict = f"(bar <= {bar}x): {_verdict(ratio <= bar)}"
        elif kind == "flops":
            verdict = f"= {ratio / needed:.2f}x the needed-FLOP ratio (bar <= {bar}x): {_verdict(ratio <= bar * needed)}"
        else:
            verdict = "(the bar's ratio at this shape)"
        by_median = f"HyPO step {hypo.step_s:.2f} s / DPO step {dpo.step_s:.2f} s = {medians:.2f}x"
        if matched is None:
            lines.append(f"{workload}: {by_median} {verdict}")
        else:
            lines.append(f"{workload}: HyPO / DPO on the same timed batches (each batch's median over repeats, "
                         f"summed) = {matched:.2f}x {verdict}")
            lines.append(f"{workload}: by median steps (a cross-check; they may fall on batches of other lengths), "
                         f"{by_median} = {medians / needed:.2f}x the needed-FLOP ratio")
        lines.append(f"{workload}: a HyPO step needs {needed:.2f}x the FLOPs of a DPO step (the step-time ratio if both "
                     f"ran at the same FLOP/s); HyPO's step ran at {hypo.flops_per_s / dpo.flops_per_s:.0%} of DPO's "
                     f"FLOP/s (one-token decode steps run far below the matmul peak)")
    if hypo and workload in HYPO_RSS_GB:
        cap = HYPO_RSS_GB[workload]
        lines.append(f"{workload}: HyPO (every weight trained) peak RSS {hypo.peak_rss_gb:.2f} GB (bar <= {cap:g} GB): "
                     f"{_verdict(hypo.peak_rss_gb <= cap)}")
    return lines


def _batch_for_batch(dpo: Summary, hypo: Summary) -> float | None:
    """HyPO's time over DPO's on the same timed batches: per batch (step), the median over repeats;
    summed over the steps after the warm-up. None unless both ran the same number of steps (> 1)."""
    def per_batch(row):
        runs = [r["step_s"] for r in row.records]
        if not runs or len({len(s) for s in runs}) != 1 or len(runs[0]) < 2:
            return None
        return [statistics.median(times) for times in zip(*runs)][1:]

    d, h = per_batch(dpo), per_batch(hypo)
    if d is None or h is None or len(d) != len(h):
        return None
    return sum(h) / sum(d)


def _rloo_bars(rows, workload) -> list[str]:
    ours, theirs = _get(rows, workload, "hybridpo rlhf"), _get(rows, workload, "trl rloo")
    if not (ours and theirs):
        return []
    ratio = ours.completions_per_s / theirs.completions_per_s
    # the same prompts per step on both sides, so the e2e pair rates give the e2e completion ratio
    e2e = ours.e2e_pairs_per_s / theirs.e2e_pairs_per_s
    need = RLOO_BARS.get(workload)
    verdict = f"(bar >= {need}x): {_verdict(ratio >= need)}" if need else "(no bar at this shape)"
    return [f"{workload}: RLOO completions/s {ours.completions_per_s:.1f} vs TRL {theirs.completions_per_s:.1f} "
            f"= {ratio:.2f}x per steady step {verdict}; end to end, the warm-up step included: {e2e:.2f}x; "
            f"peak RSS {ours.peak_rss_gb:.2f} vs {theirs.peak_rss_gb:.2f} GB"]


def phase_lines(rows: list[Summary]) -> list[str]:
    """Where each hybridpo variant's step time goes (median step; the rest is loss math and Python)."""
    lines = []
    for row in rows:
        if row.status == "ok" and row.phase_share:
            split = ", ".join(f"{name} {share:.0%}" for name, share in row.phase_share.items())
            lines.append(f"{row.workload} / {row.variant}: {split}, other {max(0.0, 1 - sum(row.phase_share.values())):.0%}")
    return lines


def markdown(peak_flops: float, threads: int, repeats: int, rows: list[Summary], machine: str,
             where: str = "cpu, fp32") -> str:
    parts = [f"Machine: {machine}; torch threads: {threads}; {where}; repeats per variant: {repeats} "
             f"(fresh process each); measured matmul peak: {peak_flops / 1e9:.0f} GFLOP/s around all runs "
             f"(each run's FLOP/s % peak is against its own, measured in its process before and after its steps, "
             f"where the run recorded one).\n"]
    for workload in dict.fromkeys(r.workload for r in rows):
        parts.append(f"### {workload}\n\n" + table([r for r in rows if r.workload == workload]) + "\n")
    split = phase_lines(rows)
    if split:
        parts.append("### Where hybridpo's step time goes\n\n" + "\n".join(f"- {line}" for line in split) + "\n")
    verdicts = bars(rows)
    if verdicts:
        parts.append("### Bars\n\n" + "\n".join(f"- {line}" for line in verdicts) + "\n")
    return "\n".join(parts)
