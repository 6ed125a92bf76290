"""A/B statistics against truth (simulations with known effects) and against scipy/statsmodels."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from closedloop.evaluation import (
    UnitSample,
    adjust_p_values,
    cuped,
    sample_ratio_check,
    sequential_half_width,
    welch,
)


def ratio_arm(rng: np.random.Generator, units: int, lift: float) -> UnitSample:
    """Decisions per unit vary, and heavy users click more: the ratio and the unit mean differ.
    The true per-decision click rate is E[n p] / E[n] + lift, whatever the mix of units."""
    counts = 1 + rng.poisson(3, size=units)
    p = 0.1 + 0.05 * (counts >= 4) + lift
    return UnitSample(sums=rng.binomial(counts, p).astype(float), counts=counts.astype(float))


def test_welch_matches_scipy_and_statsmodels_on_the_same_data() -> None:
    rng = np.random.default_rng(0)
    control, treatment = rng.exponential(1.0, 900), rng.exponential(1.1, 1300)
    ours = welch(control, treatment)
    reference = stats.ttest_ind(treatment, control, equal_var=False)
    assert ours.p_value == pytest.approx(reference.pvalue, rel=1e-9)
    low, high = reference.confidence_interval(0.95)
    assert (ours.lift_low, ours.lift_high) == pytest.approx((low, high), rel=1e-9)
    sm_low, sm_high = CompareMeans(DescrStatsW(treatment), DescrStatsW(control)).tconfint_diff(
        usevar="unequal"
    )
    assert (ours.lift_low, ours.lift_high) == pytest.approx((sm_low, sm_high), rel=1e-9)


@pytest.mark.slow
def test_intervals_cover_the_true_effect_95_percent_of_the_time() -> None:
    rng = np.random.default_rng(1)
    truth = 0.01
    covered = covered_relative = 0
    runs = 800
    for _ in range(runs):
        control, treatment = ratio_arm(rng, 3000, 0.0), ratio_arm(rng, 3000, truth)
        result = welch(control.linearized(), treatment.linearized())
        covered += result.lift_low <= truth <= result.lift_high
        covered_relative += result.relative_low <= truth / true_ratio() <= result.relative_high
    assert 0.93 <= covered / runs <= 0.97
    assert 0.93 <= covered_relative / runs <= 0.97


def true_ratio() -> float:
    """E[n p] / E[n] for n = 1 + Poisson(3), p = 0.1 + 0.05 [n >= 4]."""
    n = np.arange(1, 60)
    weights = stats.poisson.pmf(n - 1, 3)
    return float((weights * n * (0.1 + 0.05 * (n >= 4))).sum() / (weights * n).sum())


@pytest.mark.slow
def test_without_an_effect_false_positives_stay_near_5_percent() -> None:
    rng = np.random.default_rng(2)
    runs = 1000
    positives = sum(
        welch(ratio_arm(rng, 2000, 0.0).linearized(), ratio_arm(rng, 2000, 0.0).linearized()).p_value < 0.05
        for _ in range(runs)
    )
    assert 0.03 <= positives / runs <= 0.07


def test_cuped_with_a_correlated_covariate_shrinks_the_interval_and_keeps_coverage() -> None:
    rng = np.random.default_rng(3)
    runs, truth, covered, widths = 300, 0.2, 0, []
    reductions = []
    for _ in range(runs):
        pre = {arm: rng.normal(10, 2, 1500) for arm in ("c", "t")}
        post = {arm: 0.8 * pre[arm] + rng.normal(0, 1, 1500) for arm in ("c", "t")}
        post["t"] = post["t"] + truth
        plain = welch(post["c"], post["t"])
        adjusted = cuped(post, pre)
        result = welch(adjusted.adjusted["c"], adjusted.adjusted["t"])
        widths.append((result.lift_high - result.lift_low) / (plain.lift_high - plain.lift_low))
        covered += result.lift_low <= truth <= result.lift_high
        reductions.append(adjusted.variance_reduction)
    # var(post) = 0.64 * 4 + 1 = 3.56, of which 2.56 is explained by the covariate.
    assert np.mean(reductions) == pytest.approx(2.56 / 3.56, abs=0.02)
    assert np.mean(widths) == pytest.approx(np.sqrt(1 / 3.56), abs=0.02)
    assert 0.92 <= covered / runs <= 0.98


def test_srm_flags_a_505_495_split_of_a_million_units() -> None:
    check = sample_ratio_check({"a": 505_000, "b": 495_000}, {"a": 0.5, "b": 0.5}, alpha=0.001)
    assert check.mismatch
    assert check.p_value < 1e-20


@pytest.mark.slow
def test_srm_on_fair_splits_flags_about_5_percent_at_the_5_percent_level() -> None:
    rng = np.random.default_rng(4)
    runs = 1000
    flagged = 0
    for _ in range(runs):
        a = int(rng.binomial(100_000, 0.3))
        flagged += sample_ratio_check({"a": a, "b": 100_000 - a}, {"a": 0.3, "b": 0.7}, alpha=0.05).mismatch
    assert 0.03 <= flagged / runs <= 0.07


def test_srm_counts_units_in_a_zero_share_arm_as_a_mismatch() -> None:
    check = sample_ratio_check({"a": 500, "b": 500, "off": 3}, {"a": 0.5, "b": 0.5, "off": 0.0}, alpha=0.001)
    assert check.mismatch


@pytest.mark.slow
def test_peeking_every_day_at_sequential_intervals_keeps_errors_under_5_percent() -> None:
    rng = np.random.default_rng(5)
    runs, days, per_day = 400, 14, 300
    fixed_errors = sequential_errors = 0
    for _ in range(runs):
        c, t = rng.normal(0, 1, days * per_day), rng.normal(0, 1, days * per_day)
        fixed_hit = sequential_hit = False
        for day in range(1, days + 1):
            n = day * per_day
            result = welch(c[:n], t[:n], mixture_variance=1.0 / 1000)
            fixed_hit |= not (result.lift_low <= 0 <= result.lift_high)
            sequential_hit |= not (result.sequential_low <= 0 <= result.sequential_high)  # type: ignore[operator]
        fixed_errors += fixed_hit
        sequential_errors += sequential_hit
    assert fixed_errors / runs > 0.10  # the trap: a fixed-horizon interval read 14 times
    assert sequential_errors / runs <= 0.05


def test_sequential_interval_is_wider_than_the_fixed_one() -> None:
    assert sequential_half_width(0.01, 0.01) > 1.96 * 0.1


def test_corrections_match_statsmodels_and_skip_missing_p_values() -> None:
    p = [0.01, 0.04, float("nan"), 0.03, 0.2]
    holm = adjust_p_values(p, "holm")
    bh = adjust_p_values(p, "benjamini-hochberg")
    assert holm[:2] == pytest.approx([0.04, 0.09])
    assert np.isnan(holm[2])
    assert all(a >= r for a, r in zip(holm, p, strict=True) if not np.isnan(r))
    assert bh[0] == pytest.approx(0.04)
    assert bh[4] == pytest.approx(0.2)
