"""The experiment report as data: what ``report.json`` holds and the HTML page shows."""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Interval(_Model):
    estimate: float | None
    low: float | None
    high: float | None

    @classmethod
    def finite(cls, estimate: float, low: float, high: float) -> Interval:
        """An interval with its infinite or NaN ends (no estimate possible) shown as missing."""

        def clean(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return cls(estimate=clean(estimate), low=clean(low), high=clean(high))


class ArmSummary(_Model):
    name: str
    control: bool
    share: float
    """Configured share of all units (after the holdout)."""
    units: int
    decisions: int


class SrmSummary(_Model):
    observed: dict[str, int]
    expected_shares: dict[str, float]
    p_value: float | None
    alpha: float
    mismatch: bool


class ArmMetric(_Model):
    arm: str
    mean: float | None
    se: float | None
    units: int
    low: float | None = None
    """The mean's 95% interval (normal, from ``se``)."""
    high: float | None = None


class MetricComparison(_Model):
    arm: str
    lift: Interval
    relative: Interval
    p_value: float | None
    adjusted_p_value: float | None
    significant: bool
    """After the multiple-testing correction."""
    sequential: Interval | None = None
    cuped_lift: Interval | None = None
    cuped_variance_reduction: float | None = None
    mde: float | None = None
    """The smallest lift this phase's data detects with 80% power at 5% (two-sided), in the
    metric's unit: (z(0.975) + z(0.8)) times the lift's standard error."""
    mde_relative: float | None = None
    """The same as a fraction of the control's mean."""
    seconds_to_decision: float | None = None
    """At the traffic so far, how much longer until the observed lift, if it is real, would be
    detected with 80% power (0: it is significant now; None: no lift to detect)."""


class MetricResult(_Model):
    name: str
    value: str
    per: str
    higher_is_better: bool
    arms: list[ArmMetric]
    comparisons: list[MetricComparison]


class GuardrailResult(_Model):
    metric: str
    arm: str
    margin: float
    relative_low: float | None
    passed: bool | None
    """None when it cannot be judged (no data)."""


class TimelinePoint(_Model):
    time: float
    arm: str
    lift: Interval


class ExposurePoint(_Model):
    """Decisions and units an arm had seen up to ``time`` (cumulative)."""

    time: float
    arm: str
    decisions: int
    units: int


class SegmentEffect(_Model):
    feature: str
    segment: str
    arm: str
    units: int
    lift: Interval


class CateGroup(_Model):
    group: int
    """1 = the fifth of units with the lowest predicted effect ... 5 = the highest."""
    units: int
    effect: Interval


class Heterogeneity(_Model):
    metric: str
    arm: str
    method: str
    breakdowns: list[SegmentEffect]
    cate_groups: list[CateGroup]
    gains: list[str]
    """Segments whose effect interval lies above zero."""
    losses: list[str]
    """Segments whose effect interval lies below zero."""


class OpeEstimate(_Model):
    policy: str
    description: str
    ips: Interval
    snips: Interval
    direct: Interval
    doubly_robust: Interval
    effective_sample_size: float
    decisions: int


class RankingOpeEstimate(_Model):
    policy: str
    description: str
    ips: Interval
    """The cascade IPS of the policy's value summed over the shown slots."""
    snips: Interval
    effective_sample_size: float
    rankings: int


class RankingOpe(_Model):
    """Rankings decided with slots, valued slot by slot (`ranking_estimates`)."""

    logged_value: Interval
    """The logged rankings' value summed over their shown slots."""
    rankings: int
    slots: int
    """The most slots a sampled ranking showed."""
    policies: list[RankingOpeEstimate]


class OpeResult(_Model):
    reward: str
    logged_value: Interval
    sample: int
    """Decisions used: a uniform sample of the phase, bounded to keep memory bounded."""
    policies: list[OpeEstimate]
    ranking: RankingOpe | None = None
    """Rankings decided with slots: every shown slot's reward, not only the top's."""


class ExperimentReport(_Model):
    experiment: str
    use_case: str
    description: str
    phase: int
    phases: list[dict[str, object]]
    started_at: float
    stopped_at: float | None
    as_of: float
    control: str
    correction: str
    notes: list[str]
    """Plain-language warnings: no data, open windows, zero-traffic arms, SRM, bad propensities."""
    arms: list[ArmSummary]
    srm: SrmSummary
    metrics: list[MetricResult]
    guardrails: list[GuardrailResult]
    timeline: list[TimelinePoint]
    exposure: list[ExposurePoint] = []
    heterogeneity: list[Heterogeneity]
    ope: OpeResult | None
