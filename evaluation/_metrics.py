"""The metrics an experiment is judged on, and their per-decision and per-unit values.

Every outcome is a metric, and so is the policy's value function (``value``); an experiment may
declare more. A metric is measured per decision (a ratio of per-unit sums) or per unit."""

from __future__ import annotations

from collections.abc import Iterator
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


@dataclass(frozen=True)
class UnitNumbers:
    """Every decision's unit numbered once, in the order of the units' ids: per-unit sums of any
    set of decisions are then counts per number, where each arm, metric, time and breakdown
    sorted its decisions' units anew (most of a 10M-decision report's analysis after reading)."""

    ids: np.ndarray
    """The units' ids, sorted: number i is ``ids[i]``."""
    codes: np.ndarray
    """Each decision's unit number (int32 below 2**31 units)."""

    @classmethod
    def of(cls, data: LoggedDecisions) -> UnitNumbers:
        ids, codes = np.unique(data.unit, return_inverse=True)
        return cls(ids, codes.astype(np.int32) if len(ids) < 2**31 else codes)

    def present(self, decisions: np.ndarray) -> np.ndarray:
        """Which units made any of the ``decisions`` (a mask over all), by number."""
        return np.bincount(self.codes[decisions], minlength=len(self.ids)) > 0

    def count(self, decisions: np.ndarray) -> int:
        """How many distinct units made the ``decisions`` (a mask over all)."""
        return int(np.count_nonzero(self.present(decisions)))

    def sample(
        self,
        values: np.ndarray,
        per: str,
        decisions: np.ndarray,
        *,
        covariates: dict[int, float] | None = None,
    ) -> UnitSample:
        """Per-unit sums of the ``decisions`` (a mask over all), and per-unit decision counts for
        per-decision metrics, units in the order of their ids."""
        codes = self.codes[decisions]
        sums = np.bincount(codes, weights=values[decisions], minlength=len(self.ids))
        counts = np.bincount(codes, minlength=len(self.ids))
        seen = counts > 0
        covariate = None
        if covariates is not None:
            covariate = np.array([covariates.get(int(u), 0.0) for u in self.ids[seen]])
        return UnitSample(sums[seen], counts[seen].astype(float) if per == "decision" else None, covariate)

    def samples_through(
        self, values: np.ndarray, per: str, decisions: np.ndarray, time: np.ndarray, cutoffs: np.ndarray
    ) -> Iterator[tuple[int, UnitSample]]:
        """For each of the increasing ``cutoffs``: how many of the ``decisions`` (a mask over all)
        were made by then (``time <= cutoff``), and their `sample` (no covariates). Grown a stretch
        of time at a time: each cutoff's sample taken anew over every decision was a twentieth of
        a 10,000,000-decision report (its timeline's 12 points)."""
        rows = np.flatnonzero(decisions)
        stretch = np.searchsorted(cutoffs, time[rows])  # the first cutoff each decision is under
        order = np.argsort(stretch, kind="stable")
        rows, ends = rows[order], np.searchsorted(stretch[order], np.arange(len(cutoffs)), side="right")
        sums = np.zeros(len(self.ids))
        counts = np.zeros(len(self.ids), dtype=np.int64)
        start = 0
        for end in ends.tolist():
            added = rows[start:end]
            codes = self.codes[added]
            sums += np.bincount(codes, weights=values[added], minlength=len(self.ids))
            counts += np.bincount(codes, minlength=len(self.ids))
            start = end
            seen = counts > 0
            yield end, UnitSample(sums[seen], counts[seen].astype(float) if per == "decision" else None)

    def earliest_decisions(self, time: np.ndarray) -> np.ndarray:
        """By number: the row of the unit's earliest decision (the first logged of equal times)."""
        earliest = np.full(len(self.ids), np.inf)
        np.minimum.at(earliest, self.codes, time)
        candidates = np.flatnonzero(time == earliest[self.codes])
        rows = np.full(len(self.ids), len(time), dtype=np.int64)
        np.minimum.at(rows, self.codes[candidates], candidates)
        return rows


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
