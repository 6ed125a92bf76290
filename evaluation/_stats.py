"""A/B statistics on per-unit data: Welch intervals, the delta method, CUPED, SRM, corrections.

Every metric is reduced to one *linearized* value per unit whose mean is the metric and whose
sample variance gives the delta-method variance (Deng et al., 2018): for a per-decision metric
(a ratio of per-unit sums) ``l_i = R + (y_i - R n_i) / mean(n)``; for a per-unit metric ``l_i = y_i``.
Welch's test on those values is then exactly the textbook test for per-unit metrics and the
delta-method test for ratios, and CUPED adjusts the same values. scipy gives the distributions and
the chi-square test, statsmodels the multiple-testing corrections; what is written here is only the
linearization and the mixture-SPRT interval, which neither library offers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests

CONFIDENCE = 0.95
Z = float(stats.norm.ppf(0.5 + CONFIDENCE / 2))


@dataclass(frozen=True)
class UnitSample:
    """One arm's units: per-unit sums of the metric, and per-unit decision counts for ratios."""

    sums: np.ndarray
    counts: np.ndarray | None = None
    """None for per-unit metrics; the number of decisions of each unit for per-decision ones."""
    covariate: np.ndarray | None = None
    """Each unit's pre-period value of the metric, for CUPED."""

    @property
    def units(self) -> int:
        return len(self.sums)

    def linearized(self) -> np.ndarray:
        sums = np.asarray(self.sums, dtype=float)
        if self.counts is None:
            return sums
        counts = np.asarray(self.counts, dtype=float)
        ratio = sums.sum() / counts.sum()
        return np.asarray(ratio + (sums - ratio * counts) / counts.mean())


@dataclass(frozen=True)
class Estimate:
    mean: float
    se: float
    units: int


@dataclass(frozen=True)
class Comparison:
    """A treatment arm against control on one metric."""

    control: Estimate
    treatment: Estimate
    lift: float
    lift_low: float
    lift_high: float
    relative: float
    relative_low: float
    relative_high: float
    p_value: float
    df: float
    sequential_low: float | None = None
    sequential_high: float | None = None


def estimate(values: np.ndarray) -> Estimate:
    n = len(values)
    se = float(np.std(values, ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    return Estimate(float(np.mean(values)) if n else math.nan, se, n)


def welch(control: np.ndarray, treatment: np.ndarray, *, mixture_variance: float | None = None) -> Comparison:
    """Treatment minus control with Welch's t interval, and the relative lift by the delta method.

    ``mixture_variance`` adds the anytime-valid interval of the mixture SPRT with that prior
    variance of the effect (see `sequential_half_width`).
    """
    c, t = estimate(control), estimate(treatment)
    var_c, var_t = c.se**2, t.se**2
    se = math.sqrt(var_c + var_t)
    df = (var_c + var_t) ** 2 / (var_c**2 / (c.units - 1) + var_t**2 / (t.units - 1)) if se > 0 else math.inf
    lift = t.mean - c.mean
    critical = float(stats.t.ppf(0.5 + CONFIDENCE / 2, df))
    p_value = float(2 * stats.t.sf(abs(lift / se), df)) if se > 0 else (0.0 if lift else 1.0)
    relative, relative_se = _relative(c, t)
    sequential: tuple[float | None, float | None] = (None, None)
    if mixture_variance is not None and se > 0:
        half = sequential_half_width(se**2, mixture_variance)
        sequential = (lift - half, lift + half)
    return Comparison(
        control=c,
        treatment=t,
        lift=lift,
        lift_low=lift - critical * se,
        lift_high=lift + critical * se,
        relative=relative,
        relative_low=relative - Z * relative_se,
        relative_high=relative + Z * relative_se,
        p_value=p_value,
        df=df,
        sequential_low=sequential[0],
        sequential_high=sequential[1],
    )


def _relative(c: Estimate, t: Estimate) -> tuple[float, float]:
    """t/c - 1 and its delta-method standard error (arms are independent)."""
    if c.mean == 0:
        return math.nan, math.nan
    relative = t.mean / c.mean - 1.0
    variance = t.se**2 / c.mean**2 + t.mean**2 * c.se**2 / c.mean**4
    return relative, math.sqrt(variance)


def sequential_half_width(variance: float, mixture_variance: float, alpha: float = 1 - CONFIDENCE) -> float:
    """Half-width of the always-valid interval of the normal-mixture SPRT (Johari et al., 2017).

    With V the variance of the estimate and tau^2 the mixture variance, the interval
    ``estimate +- sqrt(V (V + tau^2) / tau^2 * (2 log(1/alpha) + log((V + tau^2) / V)))`` covers the
    effect at every sample size simultaneously, so reading it every day does not inflate errors.
    """
    v, tau2 = variance, mixture_variance
    return math.sqrt(v * (v + tau2) / tau2 * (2 * math.log(1 / alpha) + math.log((v + tau2) / v)))


@dataclass(frozen=True)
class CupedResult:
    adjusted: dict[str, np.ndarray]
    theta: float
    variance_reduction: float
    """1 - var(adjusted) / var(unadjusted), pooled over arms."""


def cuped(values: dict[str, np.ndarray], covariates: dict[str, np.ndarray]) -> CupedResult:
    """Subtract theta * (x - mean x) with theta pooled over arms (Deng et al., 2013).

    Pooling keeps the adjustment identical in every arm, so it removes variance without moving the
    expected difference: the covariate is measured before assignment.
    """
    y = np.concatenate([values[arm] for arm in values])
    x = np.concatenate([covariates[arm] for arm in values])
    x_var = float(np.var(x))
    theta = float(np.cov(y, x, ddof=0)[0, 1] / x_var) if x_var > 0 else 0.0
    x_mean = float(np.mean(x))
    adjusted = {arm: values[arm] - theta * (covariates[arm] - x_mean) for arm in values}
    pooled = np.concatenate(list(adjusted.values()))
    y_var = float(np.var(y))
    reduction = 1.0 - float(np.var(pooled)) / y_var if y_var > 0 else 0.0
    return CupedResult(adjusted, theta, reduction)


@dataclass(frozen=True)
class SampleRatioCheck:
    observed: dict[str, int]
    expected_shares: dict[str, float]
    statistic: float
    p_value: float
    mismatch: bool
    alpha: float


def sample_ratio_check(
    observed: dict[str, int], expected_shares: dict[str, float], *, alpha: float
) -> SampleRatioCheck:
    """Chi-square goodness of fit of units per arm to the configured shares.

    Arms with a zero share take no part in the test, but any unit in one is a mismatch by itself.
    """
    tested = [arm for arm, share in expected_shares.items() if share > 0]
    total = sum(observed.get(arm, 0) for arm in tested)
    stray = any(observed.get(arm, 0) > 0 for arm, share in expected_shares.items() if share == 0)
    if total == 0 or len(tested) < 2:
        return SampleRatioCheck(observed, expected_shares, math.nan, math.nan, stray, alpha)
    share_sum = sum(expected_shares[arm] for arm in tested)
    expected = [total * expected_shares[arm] / share_sum for arm in tested]
    result = stats.chisquare([observed.get(arm, 0) for arm in tested], expected)
    p_value = float(result.pvalue)
    return SampleRatioCheck(
        observed, expected_shares, float(result.statistic), p_value, stray or p_value < alpha, alpha
    )


CORRECTIONS = {"holm": "holm", "benjamini-hochberg": "fdr_bh"}


def adjust_p_values(p_values: Sequence[float], method: str) -> list[float]:
    """Holm (family-wise error) or Benjamini-Hochberg (false discovery rate) adjusted p-values."""
    finite = [i for i, p in enumerate(p_values) if math.isfinite(p)]
    adjusted = [math.nan] * len(p_values)
    if finite:
        corrected = multipletests([p_values[i] for i in finite], method=CORRECTIONS[method])[1]
        for i, p in zip(finite, corrected, strict=True):
            adjusted[i] = float(p)
    return adjusted


def non_inferior(
    relative_low: float | None, relative_high: float | None, margin: float, *, higher_is_better: bool
) -> bool | None:
    """Whether the relative lift's interval stays clear of losing more than ``margin``; None when
    there is no interval to judge."""
    if relative_low is None or relative_high is None:
        return None
    if not (math.isfinite(relative_low) and math.isfinite(relative_high)):
        return None
    if higher_is_better:
        return relative_low > -margin
    return relative_high < margin
