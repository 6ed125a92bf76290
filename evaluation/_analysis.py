"""Analysing one experiment phase from the logs: arms, SRM, metrics, guardrails, effects, OPE."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from closedloop.contracts import (
    HOLDOUT_ARM,
    ClosedLoopConfig,
    ExperimentConfig,
    ExperimentError,
    ExperimentPhase,
    Topics,
    UnknownExperimentError,
    UseCaseConfig,
    ValueExpression,
)
from closedloop.evaluation._effects import (
    MAX_UNITS,
    dr_pseudo_outcomes,
    gains_and_losses,
    group_effect,
    predicted_effects,
    sorted_groups,
)
from closedloop.evaluation._logged import OPE_SAMPLE, Gatherer, LoggedDecisions
from closedloop.evaluation._ope_data import evaluate_policies
from closedloop.evaluation._report_model import (
    ArmMetric,
    ArmSummary,
    CateGroup,
    ExperimentReport,
    GuardrailResult,
    Heterogeneity,
    Interval,
    MetricComparison,
    MetricResult,
    SegmentEffect,
    SrmSummary,
    TimelinePoint,
)
from closedloop.evaluation._stats import (
    Comparison,
    UnitSample,
    adjust_p_values,
    cuped,
    non_inferior,
    sample_ratio_check,
    welch,
)
from closedloop.eventlog import scan_topic
from closedloop.registry import ModelRegistry, open_registry

TIMELINE_POINTS = 12
# Prior variance of the effect in the mixture SPRT, as a share of the metric's per-unit variance:
# tuned for experiments of roughly a thousand units per arm; any value keeps the intervals valid.
SEQUENTIAL_TUNING = 1.0 / 1000
Progress = Callable[[str], None]


@dataclass(frozen=True)
class Metric:
    name: str
    value: ValueExpression
    per: str
    higher_is_better: bool


def find_experiment(config: ClosedLoopConfig, name: str) -> tuple[str, UseCaseConfig, ExperimentConfig]:
    found = config.find_experiment(name)
    if found is None:
        declared = sorted(e for uc in config.use_cases.values() for e in uc.experiments)
        raise UnknownExperimentError(
            f"No experiment {name!r} is declared in the configuration (declared: {declared}).",
            field="experiment",
            value=name,
            expected="an experiment declared under a use case's experiments:",
        )
    use_case_name, experiment = found
    return use_case_name, config.use_cases[use_case_name], experiment


def experiment_listing(config: ClosedLoopConfig, registry: ModelRegistry) -> dict[str, dict[str, Any]]:
    """Every declared experiment: its use case and recorded phases (JSON-ready)."""
    return {
        name: {
            "use_case": use_case_name,
            "phases": [p.model_dump(mode="json") for p in registry.phases(name)],
        }
        for use_case_name, use_case in config.use_cases.items()
        for name in use_case.experiments
    }


def chosen_phase(
    registry: ModelRegistry, name: str, phase: int | None
) -> tuple[ExperimentPhase, list[ExperimentPhase]]:
    history = registry.phases(name)
    if not history:
        raise ExperimentError(
            f"Experiment {name!r} has not been started, so it has no data yet.",
            hint=f"Start it with: closedloop experiments start {name}",
        )
    if phase is None:
        return history[-1], history
    if not 1 <= phase <= len(history):
        raise ExperimentError(
            f"Experiment {name!r} has phases 1 to {len(history)}; there is no phase {phase}.",
            field="phase",
            value=phase,
            expected=f"1 to {len(history)}",
        )
    return history[phase - 1], history


def analyze_experiment(
    config: ClosedLoopConfig,
    name: str,
    *,
    registry: ModelRegistry | None = None,
    phase: int | None = None,
    as_of: float | None = None,
    consumer_config: Mapping[str, Any] | None = None,
    ope_sample: int = OPE_SAMPLE,
    progress: Progress | None = None,
    detail: bool = True,
) -> ExperimentReport:
    """Read the logs once and compute the whole report of one phase (the latest by default).

    ``detail`` False computes only the arms, SRM, metrics and guardrails: no timeline,
    heterogeneous effects or off-policy evaluation (what a tuner polling for its measurements needs).
    """
    say = progress or (lambda _: None)
    use_case_name, use_case, experiment = find_experiment(config, name)
    own_registry = registry is None
    registry = registry or open_registry(config.infrastructure)
    try:
        current, history = chosen_phase(registry, name, phase)
        models = _champion_models(registry, use_case_name, use_case)
    finally:
        if own_registry:
            registry.close()
    breakdowns = _breakdown_features(use_case, experiment)
    gatherer = Gatherer(
        use_case_name,
        use_case,
        current,
        pre_period_seconds=experiment.cuped.pre_period.total_seconds() if experiment.cuped else None,
        breakdowns=breakdowns,
        ope_sample=ope_sample if detail else 0,
    )
    topics = Topics(config.infrastructure.topic_prefix)
    say("reading decisions")
    for batch in scan_topic(config.infrastructure, topics.decisions, consumer_config=consumer_config):
        gatherer.add_decisions(batch)
    say("joining feedback")
    now = time.time() if as_of is None else as_of
    data = gatherer.finish(
        scan_topic(config.infrastructure, topics.feedback, consumer_config=consumer_config), as_of=now
    )
    return _report(name, use_case, experiment, current, history, data, models, now, say, detail)


def _report(
    name: str,
    use_case: UseCaseConfig,
    experiment: ExperimentConfig,
    current: ExperimentPhase,
    history: list[ExperimentPhase],
    data: LoggedDecisions,
    models: dict[str, Any],
    now: float,
    say: Progress,
    detail: bool = True,
) -> ExperimentReport:
    notes = _data_notes(data, current)
    arms = _arm_summaries(current, data)
    for arm in arms:
        if arm.units == 0:
            notes.append(
                f"Arm {arm.name!r} has no units yet" + (" (its share is 0)." if arm.share == 0 else ".")
            )
    srm = _srm(current, arms, experiment.srm_alpha)
    if srm.mismatch:
        notes.insert(
            0,
            f"SAMPLE RATIO MISMATCH: units per arm do not match the configured shares "
            f"(p = {srm.p_value:.2g}). Assignment or logging is broken; do not trust the effects below.",
        )
    metrics = _metrics(use_case, experiment)
    for metric in metrics:
        if not data.reported[:, _outcome_columns(use_case, metric)].any() and len(data.decision):
            notes.append(
                f"Metric {metric.name!r}: none of its outcomes was ever reported in this phase; "
                "its values are the outcomes' defaults."
            )
    say("comparing arms")
    results = _metric_results(use_case, experiment, current, data, metrics)
    guardrails = _guardrails(experiment, current, results)
    heterogeneity, ope, timeline = [], None, []
    if detail:
        say("heterogeneous effects")
        heterogeneity = _heterogeneity(use_case, experiment, current, data, metrics, notes)
        say("off-policy evaluation")
        ope = evaluate_policies(use_case, current, data, models, notes) if len(data.sample) else None
        timeline = _timeline(use_case, current, data, _policy_value(metrics))
    return ExperimentReport(
        experiment=name,
        use_case=current.use_case,
        description=experiment.description,
        phase=current.phase,
        phases=[p.model_dump(mode="json") for p in history],
        started_at=current.started_at,
        stopped_at=current.stopped_at,
        as_of=now,
        control=current.control,
        correction=experiment.correction,
        notes=notes,
        arms=arms,
        srm=srm,
        metrics=results,
        guardrails=guardrails,
        timeline=timeline,
        heterogeneity=heterogeneity,
        ope=ope,
    )


def _champion_models(registry: ModelRegistry, name: str, use_case: UseCaseConfig) -> dict[str, Any]:
    import lightgbm as lgb

    models = {}
    for outcome, version in registry.champions(name, list(use_case.outcomes)).items():
        if version is not None:
            models[outcome] = lgb.Booster(model_str=registry.model_text(name, outcome, version))
    return models


def _breakdown_features(use_case: UseCaseConfig, experiment: ExperimentConfig) -> list[str]:
    if experiment.breakdowns is not None:
        return list(experiment.breakdowns)
    return [name for name, feature in use_case.context.items() if feature.type == "categorical"]


def _data_notes(data: LoggedDecisions, current: ExperimentPhase) -> list[str]:
    notes = []
    if not len(data.decision):
        notes.append(
            f"No decisions of phase {current.phase} have closed attribution windows yet"
            + (f" ({data.still_open} are still open)." if data.still_open else "; none were logged.")
        )
    elif data.still_open:
        notes.append(
            f"{data.still_open} decisions are left out because their attribution windows are still open."
        )
    if data.other_phases:
        notes.append(
            f"{data.other_phases} decisions of other phases of this experiment are not mixed in "
            "(their allocation differed)."
        )
    stray = int((data.arm < 0).sum())
    if stray:
        notes.append(f"{stray} decisions name an arm this phase does not have; they are left out.")
    return notes


def _arm_summaries(current: ExperimentPhase, data: LoggedDecisions) -> list[ArmSummary]:
    summaries = []
    names = [*current.arms, *([HOLDOUT_ARM] if current.holdout > 0 else [])]
    for name in names:
        code = data.arms.index(name)
        mask = data.arm == code
        share = current.holdout if name == HOLDOUT_ARM else (1 - current.holdout) * current.arms[name].share
        summaries.append(
            ArmSummary(
                name=name,
                control=name == current.control,
                share=share,
                units=len(np.unique(data.unit[mask])),
                decisions=int(mask.sum()),
            )
        )
    return summaries


def _srm(current: ExperimentPhase, arms: list[ArmSummary], alpha: float) -> SrmSummary:
    check = sample_ratio_check({a.name: a.units for a in arms}, {a.name: a.share for a in arms}, alpha=alpha)
    return SrmSummary(
        observed=check.observed,
        expected_shares=check.expected_shares,
        p_value=check.p_value if math.isfinite(check.p_value) else None,
        alpha=alpha,
        mismatch=check.mismatch,
    )


def _metrics(use_case: UseCaseConfig, experiment: ExperimentConfig) -> list[Metric]:
    metrics = [Metric(o, ValueExpression(o), "decision", True) for o in use_case.outcomes]
    metrics.append(Metric("value", use_case.policy.value_expression, "decision", True))
    metrics.extend(
        Metric(m.name, ValueExpression(m.value), m.per, m.higher_is_better) for m in experiment.metrics
    )
    return metrics


def _policy_value(metrics: list[Metric]) -> Metric:
    return next(m for m in metrics if m.name == "value")


def _outcome_columns(use_case: UseCaseConfig, metric: Metric) -> list[int]:
    names = list(use_case.outcomes)
    return [names.index(o) for o in sorted(metric.value.names)]


def _per_decision(use_case: UseCaseConfig, metric: Metric, outcomes: np.ndarray) -> np.ndarray:
    columns = {name: outcomes[:, i] for i, name in enumerate(use_case.outcomes)}
    return np.broadcast_to(np.asarray(metric.value.evaluate(columns), dtype=float), len(outcomes))


def _unit_sample(
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


def _pre_period_covariates(
    use_case: UseCaseConfig, data: LoggedDecisions, metric: Metric
) -> dict[int, float]:
    """Each unit's pre-period value of the metric (per decision: its mean; per unit: its sum)."""
    if not len(data.pre_unit):
        return {}
    values = _per_decision(use_case, metric, data.pre_outcomes)
    unique, inverse = np.unique(data.pre_unit, return_inverse=True)
    sums = np.bincount(inverse, weights=values)
    counts = np.bincount(inverse)
    result = sums / counts if metric.per == "decision" else sums
    return dict(zip(unique.tolist(), result.tolist(), strict=True))


def _compared_arms(current: ExperimentPhase) -> list[str]:
    names = [a for a in current.arms if a != current.control]
    if current.holdout > 0:
        names.append(HOLDOUT_ARM)
    return names


def _interval(estimate: float, low: float, high: float) -> Interval:
    def clean(x: float) -> float | None:
        return x if math.isfinite(x) else None

    return Interval(estimate=clean(estimate), low=clean(low), high=clean(high))


def _metric_results(
    use_case: UseCaseConfig,
    experiment: ExperimentConfig,
    current: ExperimentPhase,
    data: LoggedDecisions,
    metrics: list[Metric],
) -> list[MetricResult]:
    raw: list[tuple[Metric, list[ArmMetric], list[tuple[str, Comparison | None, Any]]]] = []
    for metric in metrics:
        values = _per_decision(use_case, metric, data.outcomes)
        covariates = _pre_period_covariates(use_case, data, metric) if experiment.cuped else None
        samples = {}
        for code, arm in enumerate(data.arms):
            mask = data.arm == code
            if mask.any():
                samples[arm] = _unit_sample(data.unit[mask], values[mask], metric.per, covariates)[0]
        arm_metrics = [_arm_metric(arm, samples.get(arm)) for arm in data.arms if arm in samples]
        comparisons = []
        for arm in _compared_arms(current):
            comparisons.append((arm, *_compare(samples, current.control, arm, experiment)))
        raw.append((metric, arm_metrics, comparisons))
    p_values = [c.p_value if c else math.nan for _, _, comps in raw for _, c, _ in comps]
    adjusted = iter(adjust_p_values(p_values, experiment.correction))
    results = []
    for metric, arm_metrics, comps in raw:
        rows = []
        for arm, comparison, extra in comps:
            adj = next(adjusted)
            rows.append(_comparison_row(arm, comparison, adj, extra))
        results.append(
            MetricResult(
                name=metric.name,
                value=metric.value.source,
                per=metric.per,
                higher_is_better=metric.higher_is_better,
                arms=arm_metrics,
                comparisons=rows,
            )
        )
    return results


def _arm_metric(arm: str, sample: UnitSample | None) -> ArmMetric:
    if sample is None or sample.units == 0:
        return ArmMetric(arm=arm, mean=None, se=None, units=0)
    values = sample.linearized()
    se = float(np.std(values, ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan
    return ArmMetric(
        arm=arm, mean=float(np.mean(values)), se=se if math.isfinite(se) else None, units=sample.units
    )


def _compare(
    samples: dict[str, UnitSample], control: str, arm: str, experiment: ExperimentConfig
) -> tuple[Comparison | None, tuple[Comparison, float] | None]:
    c, t = samples.get(control), samples.get(arm)
    if c is None or t is None or c.units < 2 or t.units < 2:
        return None, None
    c_values, t_values = c.linearized(), t.linearized()
    pooled_variance = float(np.var(np.concatenate([c_values, t_values])))
    mixture = pooled_variance * SEQUENTIAL_TUNING if experiment.sequential and pooled_variance > 0 else None
    comparison = welch(c_values, t_values, mixture_variance=mixture)
    adjusted = None
    if experiment.cuped and c.covariate is not None and t.covariate is not None:
        result = cuped({"c": c_values, "t": t_values}, {"c": c.covariate, "t": t.covariate})
        adjusted = (welch(result.adjusted["c"], result.adjusted["t"]), result.variance_reduction)
    return comparison, adjusted


def _comparison_row(
    arm: str, comparison: Comparison | None, adjusted_p: float, cuped_result: tuple[Comparison, float] | None
) -> MetricComparison:
    if comparison is None:
        empty = Interval(estimate=None, low=None, high=None)
        return MetricComparison(
            arm=arm, lift=empty, relative=empty, p_value=None, adjusted_p_value=None, significant=False
        )
    sequential = None
    if comparison.sequential_low is not None and comparison.sequential_high is not None:
        sequential = _interval(comparison.lift, comparison.sequential_low, comparison.sequential_high)
    row = MetricComparison(
        arm=arm,
        lift=_interval(comparison.lift, comparison.lift_low, comparison.lift_high),
        relative=_interval(comparison.relative, comparison.relative_low, comparison.relative_high),
        p_value=comparison.p_value if math.isfinite(comparison.p_value) else None,
        adjusted_p_value=adjusted_p if math.isfinite(adjusted_p) else None,
        significant=bool(math.isfinite(adjusted_p) and adjusted_p < 0.05),
        sequential=sequential,
    )
    if cuped_result is not None:
        adjusted, reduction = cuped_result
        row = row.model_copy(
            update={
                "cuped_lift": _interval(adjusted.lift, adjusted.lift_low, adjusted.lift_high),
                "cuped_variance_reduction": reduction,
            }
        )
    return row


def _guardrails(
    experiment: ExperimentConfig, current: ExperimentPhase, results: list[MetricResult]
) -> list[GuardrailResult]:
    by_name = {r.name: r for r in results}
    rows = []
    for guardrail in experiment.guardrails:
        result = by_name[guardrail.metric]
        for comparison in result.comparisons:
            if comparison.arm == HOLDOUT_ARM:
                continue
            low, high = comparison.relative.low, comparison.relative.high
            passed = non_inferior(low, high, guardrail.margin, higher_is_better=result.higher_is_better)
            rows.append(
                GuardrailResult(
                    metric=guardrail.metric,
                    arm=comparison.arm,
                    margin=guardrail.margin,
                    relative_low=low if result.higher_is_better else high,
                    passed=passed,
                )
            )
    return rows


def _timeline(
    use_case: UseCaseConfig, current: ExperimentPhase, data: LoggedDecisions, metric: Metric
) -> list[TimelinePoint]:
    """The cumulative lift of the policy value, re-estimated at evenly spaced times."""
    if len(data.time) < 2:
        return []
    values = _per_decision(use_case, metric, data.outcomes)
    control = data.arms.index(current.control)
    points = []
    for cutoff in np.linspace(data.time.min(), data.time.max(), TIMELINE_POINTS + 1)[1:]:
        upto = data.time <= cutoff
        c_mask = upto & (data.arm == control)
        if c_mask.sum() < 2:
            continue
        c_sample = _unit_sample(data.unit[c_mask], values[c_mask], metric.per)[0]
        for arm in [a for a in current.arms if a != current.control]:
            t_mask = upto & (data.arm == data.arms.index(arm))
            if t_mask.sum() < 2:
                continue
            t_sample = _unit_sample(data.unit[t_mask], values[t_mask], metric.per)[0]
            if c_sample.units < 2 or t_sample.units < 2:
                continue
            result = welch(c_sample.linearized(), t_sample.linearized())
            points.append(
                TimelinePoint(
                    time=float(cutoff),
                    arm=arm,
                    lift=_interval(result.lift, result.lift_low, result.lift_high),
                )
            )
    return points


def _heterogeneity(
    use_case: UseCaseConfig,
    experiment: ExperimentConfig,
    current: ExperimentPhase,
    data: LoggedDecisions,
    metrics: list[Metric],
    notes: list[str],
) -> list[Heterogeneity]:
    """Effects on the policy value by segment, and the DR-learner's sorted groups, per arm."""
    metric = _policy_value(metrics)
    values = _per_decision(use_case, metric, data.outcomes)
    # One row per unit: the context of its first decision in the phase.
    order = np.lexsort((data.time, data.unit))
    first = order[np.r_[True, data.unit[order][1:] != data.unit[order][:-1]]] if len(order) else order
    unit_of_first = data.unit[first]
    results = []
    control_code = data.arms.index(current.control)
    for arm in [a for a in current.arms if a != current.control]:
        code = data.arms.index(arm)
        mask = (data.arm == control_code) | (data.arm == code)
        if len(np.unique(data.unit[mask & (data.arm == code)])) < 2:
            continue
        results.append(
            _arm_heterogeneity(
                use_case, experiment, data, metric, values, mask, code, arm, first, unit_of_first
            )
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
    first: np.ndarray,
    unit_of_first: np.ndarray,
) -> Heterogeneity:
    units = data.unit[mask]
    unique, inverse = np.unique(units, return_inverse=True)
    sums = np.bincount(inverse, weights=values[mask])
    counts = np.bincount(inverse).astype(float)
    treated = np.zeros(len(unique), dtype=bool)
    treated[np.unique(inverse[data.arm[mask] == code])] = True
    # Per-unit value linearized within its arm, so group means are the arms' ratio metric.
    outcome = np.empty(len(unique))
    for flag in (False, True):
        group = treated == flag
        sample = UnitSample(sums[group], counts[group] if metric.per == "decision" else None)
        outcome[group] = sample.linearized()
    position = np.searchsorted(unit_of_first, unique)
    rows = first[position]
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
                        lift=_interval(result.lift, result.lift_low, result.lift_high),
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
            CateGroup(group=int(g.label), units=g.units, effect=_interval(g.estimate, g.low, g.high))
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
