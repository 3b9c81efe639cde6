"""The claims' verdicts (hybridpo/experiments/tldr/claims.py) on seed values worked by hand."""

import math

import pytest

from hybridpo.experiments.tldr.claims import compare, summary


def test_summary_is_the_mean_and_the_sample_standard_deviation():
    mean, sd, n = summary([1.0, 2.0, 4.0])
    assert (mean, n) == (pytest.approx(7 / 3), 3)
    assert sd == pytest.approx(math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2))
    assert math.isnan(summary([5.0])[1])


def test_above_needs_two_standard_errors():
    # a: mean 2, sd 1 (n 3); b: constant 0 -> SE = 1/sqrt(3) = 0.577, d = 2 > 1.155
    c = compare([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], ">")
    assert c["verdict"] == "reproduced"
    assert c["se"] == pytest.approx(1 / math.sqrt(3))
    # a: mean 1.0, sd sqrt(0.5); b: mean 0.1, sd sqrt(0.02) -> SE = sqrt(0.25 + 0.01) = 0.51, d = 0.9 < 1.02
    c = compare([0.5, 1.5], [0.0, 0.2], ">")
    assert c["verdict"] == "within noise"
    assert c["se"] == pytest.approx(math.sqrt(0.26))
    assert compare([0.0, 0.2], [0.5, 1.5], ">")["verdict"] == "not reproduced"
    assert compare([0.0, 0.2], [0.5, 1.5], "<")["verdict"] == "within noise"  # the same numbers, the sign turned


def test_at_least_is_reproduced_at_equality_and_within_noise_down_to_two_standard_errors():
    assert compare([1.0, 3.0], [2.0, 2.0], "≥")["verdict"] == "reproduced"  # d = 0
    # d = -0.9, SE = 0.51: -2 SE = -1.02 <= d < 0
    assert compare([0.0, 0.2], [0.5, 1.5], "≥")["verdict"] == "within noise"
    # d = -3, SE = sqrt(2/2) = 1: below -2 SE
    assert compare([-1.0, 1.0], [3.0, 3.0], "≥")["verdict"] == "not reproduced"
    assert compare([3.0, 3.0], [-1.0, 1.0], "≤")["verdict"] == "not reproduced"


def test_one_seed_reads_the_sign_alone_and_a_missing_run_is_not_run():
    assert compare([0.3], [0.1, 0.2, 0.3], ">")["verdict"] == "reproduced"
    assert math.isnan(compare([0.3], [0.1, 0.2, 0.3], ">")["se"])
    assert compare([0.1], [0.1, 0.2, 0.3], "≥")["verdict"] == "not reproduced"  # no SE: below is below
    assert compare([], [0.1], ">") == {"verdict": "not run"}

