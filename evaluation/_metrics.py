"""The metrics an experiment is judged on, and their per-decision and per-unit values.

Every outcome is a metric, and so is the policy's value function (``value``); an experiment may
declare more. A metric is measured per decision (a ratio of per-unit sums) or per unit."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from closedloop.contracts import ExperimentConfig, UseCaseConfig, ValueExpression

from ._logged import LoggedDecisions
from ._stats import UnitSample


@dataclass(frozen=True)
class Metric:
    name: str
    value: ValueExpression
    per: str
    higher_is_better: bool


def experiment_metrics(use_case: UseCaseConfig, experiment: ExperimentConfig) -> list[Metric]:
    metrics = [Metric(o, ValueExpression(o), "decision", True) for o in use_case.outcomes]
    metrics.append(Metric("value", use_case.policy.value_expression, "decision", True))
    metrics.extend(
        Metric(m.name, ValueExpression(m.value), m.per, m.higher_is_better) for m in experiment.metrics
    )
    return metrics


def policy_value(metrics: list[Metric]) -> Metric:
    return next(m for m in metrics if m.name == "value")


def outcome_columns(use_case: UseCaseConfig, metric: Metric) -> list[int]:
    names = list(use_case.outcomes)
    return [names.index(o) for o in sorted(metric.value.names)]


def per_decision(use_case: UseCaseConfig, metric: Metric, outcomes: np.ndarray) -> np.ndarray:
    columns = {name: outcomes[:, i] for i, name in enumerate(use_case.outcomes)}
    return np.broadcast_to(np.asarray(metric.value.evaluate(columns), dtype=float), len(outcomes))


def unit_sample(
    units: np.ndarray, values: np.ndarray, per: str, covariates: dict[int, float] | None = None
) -> tuple[UnitSample, np.ndarray]:
    """Per-unit sums (and decision counts for per-decision metrics) of one arm's decisions."""
    unique, inverse = np.unique(units, return_inverse=True)
    sums = np.bincount(inverse, weights=values, minlength=len(unique))
    counts = np.bincount(inverse, minlength=len(unique)).astype(float)
    covariate = None
    if covariates is not None:
        covariate = np.array([covariates.get(int(u), 0.0) for u in unique])
    return UnitSample(sums, counts if per == "decision" else None, covariate), unique


@dataclass(frozen=True)
class ArmUnits:
    """One arm's decisions with their units numbered once, in the order of their ids: a sample of
    the decisions up to a time is then a count per number, not another sort of the units (the
    report's timeline re-estimates at a dozen times: a sort each took most of its time at 10
    million decisions)."""

    data: LoggedDecisions
    rows: np.ndarray
    """The arm's decisions: their rows in ``data`` (int32 at most 2**31 rows: 4 bytes a decision)."""
    codes: np.ndarray
    """Each decision's unit, numbered by id."""
    units: int

    @classmethod
    def of(cls, data: LoggedDecisions, arm: int) -> ArmUnits:
        rows = np.flatnonzero(data.arm == arm)
        unique, codes = np.unique(data.unit[rows], return_inverse=True)
        index = np.int32 if len(data.arm) < 2**31 else np.int64
        return cls(data, rows.astype(index), codes.astype(index), len(unique))

    def decisions_until(self, cutoff: float) -> np.ndarray:
        """Which of the arm's decisions were made at or before ``cutoff``."""
        return np.asarray(self.data.time[self.rows] <= cutoff)

    def units_among(self, decisions: np.ndarray) -> int:
        """How many distinct units made the ``decisions`` (a mask over the arm's)."""
        return int(np.count_nonzero(np.bincount(self.codes[decisions], minlength=self.units)))

    def sample(self, values: np.ndarray, per: str, decisions: np.ndarray) -> UnitSample:
        """`unit_sample` of the ``decisions`` (a mask over the arm's), ``values`` over all rows."""
        codes = self.codes[decisions]
        sums = np.bincount(codes, weights=values[self.rows[decisions]], minlength=self.units)
        counts = np.bincount(codes, minlength=self.units)
        seen = counts > 0
        return UnitSample(sums[seen], counts[seen].astype(float) if per == "decision" else None)


def pre_period_covariates(use_case: UseCaseConfig, data: LoggedDecisions, metric: Metric) -> dict[int, float]:
    """Each unit's pre-period value of the metric (per decision: its mean; per unit: its sum)."""
    if not len(data.pre_unit):
        return {}
    values = per_decision(use_case, metric, data.pre_outcomes)
    unique, inverse = np.unique(data.pre_unit, return_inverse=True)
    sums = np.bincount(inverse, weights=values)
    counts = np.bincount(inverse)
    result = sums / counts if metric.per == "decision" else sums
    return dict(zip(unique.tolist(), result.tolist(), strict=True))
