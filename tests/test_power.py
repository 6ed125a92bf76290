"""The report's power figures against statsmodels' (the reference) on the same numbers, and the
minimum detectable effect against truth: a lift of that size is detected 80% of the time."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.power import NormalIndPower

from closedloop.evaluation import with_power
from closedloop.evaluation._report_model import Interval, MetricComparison

Z = stats.norm.ppf(0.975)


def comparison(lift: float, se: float, *, significant: bool = False) -> MetricComparison:
    interval = Interval(estimate=lift, low=lift - Z * se, high=lift + Z * se)
    return MetricComparison(
        arm="b", lift=interval, relative=interval, p_value=0.5, adjusted_p_value=0.5, significant=significant
    )


@pytest.mark.parametrize(("units", "sd"), [(400, 1.0), (2500, 0.4), (10_000, 3.0)])
def test_the_mde_and_the_time_to_a_decision_equal_statsmodels(units: int, sd: float) -> None:
    se = sd * np.sqrt(2 / units)  # two arms of ``units`` each
    lift = 0.6 * 2.8 * se  # smaller than detectable now
    row = with_power(comparison(lift, se), control_mean=2.0, elapsed=86_400.0)
    solver = NormalIndPower()
    effect = solver.solve_power(nobs1=units, alpha=0.05, power=0.8, ratio=1.0)
    assert row.mde == pytest.approx(effect * sd, rel=1e-4)  # statsmodels counts the far tail too
    assert row.mde_relative == pytest.approx(
        effect * sd / 2.0, rel=1e-4
    )  # statsmodels counts the far tail too
    needed = solver.solve_power(effect_size=lift / sd, alpha=0.05, power=0.8, ratio=1.0)
    assert row.seconds_to_decision == pytest.approx(
        86_400.0 * (needed / units - 1), rel=1e-4
    )  # statsmodels counts the far tail too
    assert with_power(comparison(lift, se, significant=True), 2.0, 86_400.0).seconds_to_decision == 0


def test_a_lift_the_size_of_the_mde_is_detected_80_percent_of_the_time() -> None:
    rng = np.random.default_rng(3)
    units, sd = 1000, 1.0
    se = sd * np.sqrt(2 / units)
    mde = with_power(comparison(0.0, se), control_mean=1.0, elapsed=1.0).mde
    assert mde is not None
    detected = 0
    trials = 2000
    for _ in range(trials):
        a = rng.normal(0.0, sd, units)
        b = rng.normal(mde, sd, units)
        detected += stats.ttest_ind(b, a, equal_var=False).pvalue < 0.05
    assert detected / trials == pytest.approx(0.8, abs=0.03)
