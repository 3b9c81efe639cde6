"""The `bench speed` table and issue 7's bars, as markdown text (no I/O here)."""

from __future__ import annotations

import math

from hybridpo.bench.speed import Summary

HYBRIDPO_DPO = ("hybridpo dpo", "hybridpo dpo precompute-ref", "hybridpo dpo padded")  # first: the default
TRL_DPO = ("trl dpo ref-model", "trl dpo precompute-ref")
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
    ("sys CPU %", "sys_share", "{:.0%}"),
    ("page faults", "minor_faults", "{:.3g}"),
    ("loss@1", "loss_1", "{:.7f}"),
    ("loss@2", "loss_2", "{:.7f}"),
    ("logps/chosen@1", "logps_chosen_1", "{:.4f}"),
    ("FLOP/s % peak", "flops_frac", "{:.1%}"),
]


def _cell(fmt: str, value) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
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
    """Issue 7's bars that these rows can decide, one line each; bars without data are skipped."""
    lines = []
    for workload, need in (("tiny", 1.5), ("tldr", 3.0)):
        ours_all = [r for v in HYBRIDPO_DPO if (r := _get(rows, workload, v))]
        theirs = [r for v in TRL_DPO if (r := _get(rows, workload, v))]
        if ours_all and theirs:
            ours = max(ours_all, key=lambda r: r.e2e_pairs_per_s)
            best = max(theirs, key=lambda r: r.e2e_pairs_per_s)
            ratio = ours.e2e_pairs_per_s / best.e2e_pairs_per_s
            lines.append(f"{workload}: DPO e2e pairs/s, hybridpo's best ({ours.variant}) {ours.e2e_pairs_per_s:.2f} "
                         f"vs TRL's best ({best.variant}) {best.e2e_pairs_per_s:.2f} = {ratio:.2f}x "
                         f"(bar >= {need}x): {_verdict(ratio >= need)}")
            for r in theirs:
                diff = abs(ours_all[0].loss_2 - r.loss_2)
                lines.append(f"{workload}: |loss@2 {ours_all[0].variant} - {r.variant}| = {diff:.2e} (same work if "
                             f"<= {LOSS_TOLERANCE:g}): {'same' if diff <= LOSS_TOLERANCE else 'DIFFERENT'}")
            if workload == "tldr":
                ours_low = min(ours_all, key=lambda r: r.peak_rss_gb)
                lowest = min(theirs, key=lambda r: r.peak_rss_gb)
                share = ours_low.peak_rss_gb / lowest.peak_rss_gb
                lines.append(f"tldr: peak RSS, hybridpo's lowest ({ours_low.variant}) {ours_low.peak_rss_gb:.2f} GB "
                             f"vs TRL's lowest ({lowest.variant}) {lowest.peak_rss_gb:.2f} GB = {share:.0%} "
                             f"(bar <= 50%): {_verdict(share <= 0.5)}")
        steady = _get(rows, workload, "hybridpo dpo")
        if workload == "tldr" and steady:
            lines.append(f"tldr: hybridpo dpo reaches {steady.flops_frac:.1%} of the fp32 matmul peak on the needed "
                         f"FLOPs (bar >= 50%): {_verdict(steady.flops_frac >= 0.5)}")
    for workload in dict.fromkeys(r.workload for r in rows):  # in table order
        dpo, hypo = _get(rows, workload, "hybridpo dpo"), _get(rows, workload, "hybridpo hypo")
        if not (dpo and hypo):
            continue
        ratio = hypo.step_s / dpo.step_s
        verdict = f"(bar <= 1.5x): {_verdict(ratio <= 1.5)}" if workload == "hypo" else "(the bar's ratio at this shape)"
        lines.append(f"{workload}: HyPO step {hypo.step_s:.2f} s / DPO step {dpo.step_s:.2f} s = {ratio:.2f}x {verdict}")
        # FLOPs a step needs = achieved FLOP/s x step time; their ratio is the step-time ratio at equal efficiency
        needed = (hypo.flops_frac * hypo.step_s) / (dpo.flops_frac * dpo.step_s)
        lines.append(f"{workload}: a HyPO step needs {needed:.2f}x the FLOPs of a DPO step (the step-time ratio if both "
                     f"ran at the same FLOP/s); HyPO's step ran at {hypo.flops_frac / dpo.flops_frac:.0%} of DPO's "
                     f"FLOP/s (one-token decode steps run far below the matmul peak)")
    ours, theirs = _get(rows, "tiny", "hybridpo rlhf"), _get(rows, "tiny", "trl rloo")
    if ours and theirs:
        ratio = ours.completions_per_s / theirs.completions_per_s
        # the same prompts per step on both sides, so the e2e pair rates give the e2e completion ratio
        e2e = ours.e2e_pairs_per_s / theirs.e2e_pairs_per_s
        lines.append(f"tiny: RLOO completions/s {ours.completions_per_s:.1f} vs TRL {theirs.completions_per_s:.1f} "
                     f"= {ratio:.2f}x per steady step (bar >= 2x): {_verdict(ratio >= 2.0)}; end to end, "
                     f"the warm-up step included: {e2e:.2f}x")
    return lines


def phase_lines(rows: list[Summary]) -> list[str]:
    """Where each hybridpo variant's step time goes (median step; the rest is loss math and Python)."""
    lines = []
    for row in rows:
        if row.status == "ok" and row.phase_share:
            split = ", ".join(f"{name} {share:.0%}" for name, share in row.phase_share.items())
            lines.append(f"{row.workload} / {row.variant}: {split}, other {max(0.0, 1 - sum(row.phase_share.values())):.0%}")
    return lines


def markdown(peak_flops: float, threads: int, repeats: int, rows: list[Summary], machine: str) -> str:
    parts = [f"Machine: {machine}; torch threads: {threads}; fp32 CPU; repeats per variant: {repeats} "
             f"(fresh process each); measured fp32 matmul peak: {peak_flops / 1e9:.0f} GFLOP/s.\n"]
    for workload in dict.fromkeys(r.workload for r in rows):
        parts.append(f"### {workload}\n\n" + table([r for r in rows if r.workload == workload]) + "\n")
    split = phase_lines(rows)
    if split:
        parts.append("### Where hybridpo's step time goes\n\n" + "\n".join(f"- {line}" for line in split) + "\n")
    verdicts = bars(rows)
    if verdicts:
        parts.append("### Bars (issue 7)\n\n" + "\n".join(f"- {line}" for line in verdicts) + "\n")
    return "\n".join(parts)
