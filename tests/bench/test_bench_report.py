"""Medians, end-to-end rates and the bar verdicts, on hand-made records."""

import math

from hybridpo.bench.record import RunRecord
from hybridpo.bench.report import COLUMNS, bars, markdown
from hybridpo.bench.speed import Summary, summarize


def _record(**kw):
    base = dict(variant="v", workload="tiny", pairs_per_step=8, step_s=[10.0, 1.0, 3.0, 2.0], precompute_s=4.0,
                losses=[0.7, 0.6, 0.5, 0.4], logps_chosen=[-5.0, -4.0, -3.0, -2.0], tokens=[100, 200, 200, 200],
                flops=[0, 6e9, 6e9, 6e9], peak_rss_bytes=2_000_000_000, user_s=9.0, sys_s=1.0, minor_faults=50)
    base.update(kw)
    return RunRecord(**base)


def test_summarize_by_hand():
    phases = [{"backward": 5.0}, {"backward": 0.5}, {"backward": 1.5}, {"backward": 1.0}]
    s = summarize([_record(phase_s=phases)], peak_flops=1e10)
    assert s.step_s == 2.0  # median of the timed steps 1, 3, 2 (step 1 = 10 s is the warm-up)
    assert s.pairs_per_s == 4.0  # 8 pairs / 2 s
    assert s.e2e_pairs_per_s == 8 * 4 / (4.0 + 16.0)  # every step and the precompute count end to end
    assert s.tokens_per_s == 100.0  # 200 tokens / 2 s
    assert s.flops_frac == 0.3  # 6e9 FLOPs / 2 s = 3e9 FLOP/s of a 1e10 peak
    assert s.sys_share == 0.1 and s.peak_rss_gb == 2.0
    assert (s.loss_1, s.loss_2, s.logps_chosen_1) == (0.7, 0.6, -5.0)
    assert math.isnan(s.completions_per_s)  # offline: no samples
    assert s.phase_share == {"backward": 0.5}  # median timed backward 1.0 s of the 2.0 s median step


def test_rates_are_the_timed_steps_work_over_their_time():
    """Steps of other lengths: the FLOP and token rates divide sums over the same steps, not a mean
    of the work by the median step."""
    s = summarize([_record(step_s=[10.0, 1.0, 1.0, 4.0], flops=[0, 2e9, 2e9, 8e9], tokens=[0, 100, 100, 400])], 1e10)
    assert s.step_s == 1.0
    assert s.flops_frac == 0.2  # 12e9 FLOPs / 6 s; the mean 4e9 over the median 1 s would read 0.4
    assert s.tokens_per_s == 100.0  # 600 tokens / 6 s


def test_each_run_is_measured_against_its_own_peak():
    """A run that measured the machine's matmul rate in its own process is read against it (the
    machine drifts between runs); one that did not, against the peak measured around all runs."""
    own = _record(peak_flops=5e9)  # 6e9 FLOPs / 2 s = 3e9 FLOP/s
    s = summarize([own], peak_flops=1e10)
    assert s.flops_per_s == 3e9 and s.flops_frac == 0.6 and s.run_peak == 5e9
    mixed = summarize([own, _record(), _record(peak_flops=2e10)], peak_flops=1e10)
    assert mixed.flops_frac == 0.3  # the median of 0.6, 0.3 (no own peak: 1e10) and 0.15
    assert math.isnan(mixed.run_peak)  # not every run measured one


def test_summarize_takes_medians_over_repeats():
    runs = [_record(step_s=[9.0, t, t]) for t in (1.0, 4.0, 2.0)]
    assert summarize(runs, 1e10).step_s == 2.0


def _row(workload, variant, **kw):
    return Summary(variant=variant, workload=workload, status="ok", **kw)


def test_bars_compare_against_trls_best_variant_and_check_the_loss():
    rows = [
        _row("tldr", "hybridpo dpo", e2e_pairs_per_s=0.9, loss_2=0.6931, peak_rss_gb=3.0, flops_frac=0.55),
        _row("tldr", "hybridpo dpo precompute-ref", e2e_pairs_per_s=0.5, loss_2=0.6931, peak_rss_gb=3.5),
        _row("tldr", "trl dpo ref-model", e2e_pairs_per_s=0.2, loss_2=0.693105, peak_rss_gb=8.0),
        _row("tldr", "trl dpo precompute-ref", e2e_pairs_per_s=0.3, loss_2=0.6932, peak_rss_gb=5.0),
        _row("hypo", "hybridpo dpo", step_s=2.0),
        _row("hypo", "hybridpo hypo", step_s=3.5),
    ]
    text = "\n".join(bars(rows))
    assert "hybridpo's best (hybridpo dpo) 0.90" in text  # the better of 0.9 and 0.5
    assert "= 3.00x (bar >= 3.0x): met" in text  # 0.9 / max(0.2, 0.3)
    assert "trl dpo ref-model| = 5.00e-06" in text and ": same" in text
    assert "trl dpo precompute-ref| = 1.00e-04" in text and "DIFFERENT" in text
    assert "= 60% (bar <= 50%): NOT met" in text  # 3.0 GB vs TRL's lowest 5.0 GB
    assert "hybridpo's lowest (hybridpo dpo) 3.00 GB" in text
    assert "55.0% of the matmul peak" in text and "(bar >= 50%): met" in text
    assert "= 1.75x (bar <= 1.5x): NOT met" in text


def test_markdown_has_every_column_and_explains_missing_variants():
    rows = [_row("tiny", "hybridpo dpo", step_s=1.0), Summary("hybridpo rlhf", "tiny", "unavailable: no rlhf yet")]
    text = markdown(3.3e11, 2, 3, rows, "test machine")
    for header, _, _ in COLUMNS:
        assert header in text
    assert "330 GFLOP/s" in text and "unavailable: no rlhf yet" in text


def test_smollm2_bars():
    rows = [
        _row("smollm2-dpo", "hybridpo dpo", e2e_pairs_per_s=0.40, loss_2=0.6942, peak_rss_gb=9.0, flops_frac=0.65),
        _row("smollm2-dpo", "hybridpo dpo last-4", e2e_pairs_per_s=1.2, loss_2=0.6932, peak_rss_gb=3.0),
        _row("smollm2-dpo", "trl dpo ref-model", e2e_pairs_per_s=0.09, loss_2=0.6942, peak_rss_gb=20.0),
        _row("smollm2-dpo", "trl dpo precompute-ref", e2e_pairs_per_s=0.11, loss_2=0.6942, peak_rss_gb=19.0),
        _row("smollm2-dpo", "trl dpo ref-model last-4", e2e_pairs_per_s=0.2, loss_2=0.6932, peak_rss_gb=18.0),
        _row("smollm2-hypo", "hybridpo dpo", step_s=20.0, step_flops=3.0e12),
        _row("smollm2-hypo", "hybridpo hypo", step_s=30.0, step_flops=4.2e12, peak_rss_gb=10.5),
    ]
    text = "\n".join(bars(rows))
    assert "= 6.00x (bar >= 4.0x): met" in text  # last-4's 1.2 over TRL's best 0.2
    assert "every weight trained: hybridpo dpo 0.40 vs trl dpo precompute-ref 0.11" in text
    assert "last blocks trained: hybridpo dpo last-4 1.20 vs trl dpo ref-model last-4 0.20" in text
    # the memory bar compares every-weight runs: 9.0 GB vs TRL's lowest 19.0 GB
    assert ("like for like (every weight trained), hybridpo's lowest (hybridpo dpo) 9.00 GB vs TRL's lowest "
            "(trl dpo precompute-ref) 19.00 GB = 47%") in text
    assert "65.0% of the matmul peak on the needed FLOPs (bar >= 60%): met" in text
    # 30 / 20 = 1.5 against a needed-FLOP ratio of 1.4: 1.07x of it
    assert "= 1.50x = 1.07x the needed-FLOP ratio (bar <= 1.1x): met" in text
    assert "needs 1.40x the FLOPs" in text
    assert "peak RSS 10.50 GB (bar <= 10 GB): NOT met" in text


def test_the_memory_bar_pairs_like_with_like_when_trl_ran_only_its_last_blocks():
    """With TRL's every-weight run left out, the bar compares the last-4 runs (3 vs 8 GB), not
    hybridpo's every-weight run with TRL's last-4 one."""
    rows = [
        _row("smollm2-dpo", "hybridpo dpo", e2e_pairs_per_s=0.6, loss_2=0.6942, peak_rss_gb=8.0),
        _row("smollm2-dpo", "hybridpo dpo last-4", e2e_pairs_per_s=1.6, loss_2=0.6932, peak_rss_gb=3.0),
        _row("smollm2-dpo", "trl dpo ref-model last-4", e2e_pairs_per_s=0.12, loss_2=0.6932, peak_rss_gb=8.0),
    ]
    text = "\n".join(bars(rows))
    assert ("like for like (last blocks trained), hybridpo's lowest (hybridpo dpo last-4) 3.00 GB vs TRL's lowest "
            "(trl dpo ref-model last-4) 8.00 GB = 38%") in text


def test_hypo_over_dpo_on_the_same_batches():
    """The bar reads the same timed batches: per batch the median over repeats, the warm-up left
    out, then the sums of those medians."""
    dpo = _row("smollm2-hypo", "hybridpo dpo", step_s=3.0, step_flops=3.0e12,
               records=[{"step_s": [9.0, 2.0, 4.0, 3.0]}, {"step_s": [9.0, 2.2, 3.6, 3.2]}, {"step_s": [9.0, 1.9, 4.1, 2.9]}])
    hypo = _row("smollm2-hypo", "hybridpo hypo", step_s=4.5, step_flops=3.6e12,
                records=[{"step_s": [20.0, 3.0, 5.0, 4.5]}, {"step_s": [20.0, 3.1, 5.2, 4.4]}, {"step_s": [20.0, 2.8, 4.9, 4.6]}])
    # medians per batch: DPO 2.0, 4.0, 3.0 (sum 9.0); HyPO 3.0, 5.0, 4.5 (sum 12.5): 12.5 / 9 = 1.39 = 1.16x of 1.2
    text = "\n".join(bars([dpo, hypo]))
    assert ("HyPO / DPO on the same timed batches (each batch's median over repeats, summed) = 1.39x = 1.16x the "
            "needed-FLOP ratio (bar <= 1.1x): NOT met") in text
    # the median steps 4.5 / 3.0 = 1.5 = 1.25x of 1.2, reported beside it without a verdict
    assert "by median steps (a cross-check; they may fall on batches of other lengths), HyPO step 4.50 s / DPO step " \
           "3.00 s = 1.50x = 1.25x the needed-FLOP ratio" in text
    uneven = _row("smollm2-hypo", "hybridpo hypo", step_s=3.3, step_flops=3.6e12, records=[{"step_s": [20.0, 3.0]}])
    text = "\n".join(bars([dpo, uneven]))  # other step counts: no pairing, the medians carry the verdict
    assert "same timed batches" not in text
    assert "HyPO step 3.30 s / DPO step 3.00 s = 1.10x = 0.92x the needed-FLOP ratio (bar <= 1.1x): met" in text


def test_the_machine_line_names_the_cpus_family_and_vector_set():
    from hybridpo.bench.record import describe_cpu

    zen2 = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 23\nmodel\t\t: 49\nmodel name\t: AMD EPYC\n"
            "flags\t\t: fpu sse2 avx avx2 fma\n\nprocessor\t: 1\nmodel name\t: another\nflags\t\t: avx512f\n")
    assert describe_cpu(zen2) == "AMD EPYC (family 23, model 49, AVX2)"  # the first processor's fields only
    xeon = "cpu family\t: 6\nmodel\t\t: 143\nmodel name\t: Intel(R) Xeon(R) Platinum\nflags\t\t: avx2 avx512f\n"
    assert describe_cpu(xeon) == "Intel(R) Xeon(R) Platinum (family 6, model 143, AVX-512)"
    assert describe_cpu("processor\t: 0\nflags\t\t: sse2\n") is None  # no model name: the caller falls back
