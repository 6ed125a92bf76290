"""Power for a data scientist at a glance: the smallest effect the data so far can detect, and how
long until the observed effect would be detected at the current traffic.

Both come from the lift's standard error (read back from its 95% interval), which shrinks as
1/sqrt(units): with n units now and the same traffic, detecting a lift ``d`` with 80% power needs
n * (mde / d)^2 units, so the time left is the time so far times (mde / d)^2 - 1.
"""

from __future__ import annotations

from scipy.stats import norm

from ._report_model import MetricComparison

ALPHA = 0.05
POWER = 0.8
Z95 = float(norm.ppf(0.975))  # the report's intervals are 95%
_Z_DETECT = float(norm.ppf(1 - ALPHA / 2) + norm.ppf(POWER))


def with_power(comparison: MetricComparison, control_mean: float | None, elapsed: float) -> MetricComparison:
    low, high, lift = comparison.lift.low, comparison.lift.high, comparison.lift.estimate
    if low is None or high is None or lift is None or high <= low:
        return comparison
    se = (high - low) / (2 * Z95)
    mde = _Z_DETECT * se
    relative = mde / abs(control_mean) if control_mean else None
    if comparison.significant:
        left: float | None = 0.0
    elif lift == 0 or elapsed <= 0:
        left = None
    else:
        left = max(0.0, elapsed * ((mde / abs(lift)) ** 2 - 1))
    return comparison.model_copy(update={"mde": mde, "mde_relative": relative, "seconds_to_decision": left})
