"""Off-policy estimates of a target policy's value from logged decisions with propensities.

The estimators are a few lines each (Dudik et al., 2011; Swaminathan & Joachims, 2015); they are
written here rather than taken from a library because the maintained ones pull in torch and
pinned, unbuildable dependencies. Inputs per logged decision i: reward r_i, the logging policy's
propensity p_i of the logged action a_i, the target's probability pi(a_i|x_i) of that action, the
reward model's q(x_i, a_i), and sum_a pi(a|x_i) q(x_i, a).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._stats import Z


@dataclass(frozen=True)
class PolicyValue:
    estimate: float
    low: float
    high: float

    @property
    def standard_error(self) -> float:
        return (self.high - self.low) / (2 * Z)


@dataclass(frozen=True)
class OffPolicyEstimates:
    ips: PolicyValue
    snips: PolicyValue
    direct: PolicyValue
    doubly_robust: PolicyValue
    effective_sample_size: float
    decisions: int


def _mean_interval(contributions: np.ndarray) -> PolicyValue:
    n = len(contributions)
    mean = float(np.mean(contributions))
    half = Z * float(np.std(contributions, ddof=1)) / math.sqrt(n) if n > 1 else math.nan
    return PolicyValue(mean, mean - half, mean + half)


def off_policy_estimates(
    reward: np.ndarray,
    propensity: np.ndarray,
    target_probability: np.ndarray,
    model_of_logged: np.ndarray,
    model_under_target: np.ndarray,
) -> OffPolicyEstimates:
    """IPS, self-normalised IPS, direct method and doubly robust, each with a 95% interval.

    Intervals are normal; SNIPS's uses the delta method for a ratio of means.
    """
    weight = target_probability / propensity
    ips = _mean_interval(weight * reward)
    total = float(weight.sum())
    snips_value = float((weight * reward).sum() / total) if total > 0 else math.nan
    if total > 0 and len(reward) > 1:
        linear = weight * (reward - snips_value) / float(np.mean(weight))
        half = Z * float(np.std(linear, ddof=1)) / math.sqrt(len(reward))
    else:
        half = math.nan
    snips = PolicyValue(snips_value, snips_value - half, snips_value + half)
    direct = _mean_interval(model_under_target)
    doubly_robust = _mean_interval(model_under_target + weight * (reward - model_of_logged))
    squares = float((weight**2).sum())
    ess = total**2 / squares if squares > 0 else 0.0
    return OffPolicyEstimates(ips, snips, direct, doubly_robust, ess, len(reward))
