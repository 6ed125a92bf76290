"""Heterogeneous effects in one experiment phase: the policy value's lift by segment of each
breakdown feature, and a DR-learner's groups and named gaining or losing segments, per arm."""

from __future__ import annotations

import numpy as np

from closedloop.contracts import ExperimentConfig, ExperimentPhase, UseCaseConfig

from ._effects import (
    MAX_UNITS,
    dr_pseudo_outcomes,
    gains_and_losses,
    group_effect,
    predicted_effects,
    sorted_groups,
)
from ._logged import LoggedDecisions
from ._metrics import Metric, UnitNumbers, per_decision, policy_value
from ._report_model import CateGroup, Heterogeneity, Interval, SegmentEffect
from ._stats import UnitSample, welch


def heterogeneous_effects(
    use_case: UseCaseConfig,
    experiment: ExperimentConfig,
    current: ExperimentPhase,
    data: LoggedDecisions,
    metrics: list[Metric],
    units: UnitNumbers,
    notes: list[str],
) -> list[Heterogeneity]:
    """Effects on the policy value by segment, and the DR-learner's sorted groups, per arm."""
    if not data.context_names:
        notes.append("Heterogeneous effects need context features; this use case declares none.")
        return []
    metric = policy_value(metrics)
    values = per_decision(use_case, metric, data.outcomes)
    # One row per unit: the context of its first decision in the phase.
    first = units.earliest_decisions(data.time)
    results = []
    control_code = data.arms.index(current.control)
    for arm in [a for a in current.arms if a != current.control]:
        code = data.arms.index(arm)
        mask = (data.arm == control_code) | (data.arm == code)
        if units.count(data.arm == code) < 2:
            continue
        results.append(
            _arm_heterogeneity(use_case, experiment, data, metric, values, mask, code, arm, units, first)
        )
    if not results and len(data.decision):
        notes.append("Heterogeneous effects need units in the control arm and in another arm.")
    return results


def _arm_heterogeneity(
    use_case: UseCaseConfig,
    experiment: ExperimentConfig,
    data: LoggedDecisions,
    metric: Metric,
    values: np.ndarray,
    mask: np.ndarray,
    code: int,
    arm: str,
    units: UnitNumbers,
    first: np.ndarray,
) -> Heterogeneity:
    present = units.present(mask)
    unique = units.ids[present]
    inverse = (np.cumsum(present) - 1)[units.codes[mask]]  # numbered among the units present
    sums = np.bincount(inverse, weights=values[mask])
    counts = np.bincount(inverse).astype(float)
    treated = np.zeros(len(unique), dtype=bool)
    treated[inverse[data.arm[mask] == code]] = True  # np.unique first: 2 s of 10,000,000 decisions
    # Per-unit value linearized within its arm, so group means are the arms' ratio metric.
    outcome = np.empty(len(unique))
    for flag in (False, True):
        group = treated == flag
        sample = UnitSample(sums[group], counts[group] if metric.per == "decision" else None)
        outcome[group] = sample.linearized()
    rows = first[present]
    features = data.context[rows].astype(np.float64)
    keep = np.ones(len(unique), dtype=bool)
    if len(unique) > MAX_UNITS:
        keep = (unique % 1_000_003) < (1_000_003 * MAX_UNITS / len(unique))
    folds = (unique & 1).astype(int)
    pseudo = np.full(len(unique), np.nan)
    effect = np.full(len(unique), np.nan)
    pseudo[keep] = dr_pseudo_outcomes(features[keep], outcome[keep], treated[keep], folds[keep])
    effect[keep] = predicted_effects(features[keep], pseudo[keep], folds[keep])
    breakdowns, segments = [], []
    for feature, column in data.breakdowns.items():
        labels = _segment_labels(column[rows])
        for label in _ordered_labels(labels):
            in_segment = labels == label
            c = UnitSample(
                sums[in_segment & ~treated],
                counts[in_segment & ~treated] if metric.per == "decision" else None,
            )
            t = UnitSample(
                sums[in_segment & treated], counts[in_segment & treated] if metric.per == "decision" else None
            )
            if c.units >= 2 and t.units >= 2:
                result = welch(c.linearized(), t.linearized())
                breakdowns.append(
                    SegmentEffect(
                        feature=feature,
                        segment=label,
                        arm=arm,
                        units=c.units + t.units,
                        lift=Interval.finite(result.lift, result.lift_low, result.lift_high),
                    )
                )
            segments.append(group_effect(f"{feature}={label}", pseudo[in_segment & keep]))
    gains, losses = gains_and_losses(
        [s for s in segments if s.units > 1],
        correction=experiment.correction,
        higher_is_better=metric.higher_is_better,
    )
    groups = sorted_groups(effect[keep], pseudo[keep])
    return Heterogeneity(
        metric=metric.name,
        arm=arm,
        method="DR-learner (LightGBM, 2-fold cross-fitting); segment effects: its pseudo-outcomes' means",
        breakdowns=breakdowns,
        cate_groups=[
            CateGroup(group=int(g.label), units=g.units, effect=Interval.finite(g.estimate, g.low, g.high))
            for g in groups
        ],
        gains=gains,
        losses=losses,
    )


def _segment_labels(column: np.ndarray) -> np.ndarray:
    """Category names as they are; numbers in four quartile bins."""
    if column.dtype == object:
        return column
    finite = column[np.isfinite(column)]
    if not len(finite):
        return np.array(["(missing)"] * len(column), dtype=object)
    edges = np.unique(np.quantile(finite, [0.25, 0.5, 0.75]))
    bins = np.searchsorted(edges, column, side="right")
    bounds = [-np.inf, *edges.tolist(), np.inf]
    names = [f"[{bounds[i]:.3g}, {bounds[i + 1]:.3g})" for i in range(len(bounds) - 1)]
    labels = np.array([names[b] for b in bins], dtype=object)
    labels[~np.isfinite(column)] = "(missing)"
    return labels


def _ordered_labels(labels: np.ndarray) -> list[str]:
    seen: dict[str, None] = {}
    for label in labels:
        seen.setdefault(str(label), None)
    return sorted(seen)
