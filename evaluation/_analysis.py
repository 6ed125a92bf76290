"""Analysing one experiment phase from the logs: arms, SRM, metrics, guardrails, effects, OPE."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
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
)
from closedloop.eventlog import TopicReader
from closedloop.policy import Experience
from closedloop.registry import ModelRegistry, champion_metadata, open_registry

from ._heterogeneity import heterogeneous_effects
from ._logged import OPE_SAMPLE, Gatherer, LoggedDecisions
from ._metrics import (
    Metric,
    UnitNumbers,
    experiment_metrics,
    outcome_columns,
    per_decision,
    policy_value,
    pre_period_covariates,
)
from ._ope_data import evaluate_policies
from ._power import Z95, with_power
from ._report_model import (
    ArmMetric,
    ArmSummary,
    ExperimentReport,
    ExposurePoint,
    GuardrailResult,
    Interval,
    MetricComparison,
    MetricResult,
    SrmSummary,
    TimelinePoint,
)
from ._stats import (
    Comparison,
    UnitSample,
    adjust_p_values,
    cuped,
    non_inferior,
    sample_ratio_check,
    welch,
)

TIMELINE_POINTS = 12
# Prior variance of the effect in the mixture SPRT, as a share of the metric's per-unit variance:
# tuned for experiments of roughly a thousand units per arm; any value keeps the intervals valid.
SEQUENTIAL_TUNING = 1.0 / 1000
Progress = Callable[[str], None]


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
    workers: int | None = None,
) -> ExperimentReport:
    """Read the logs once and compute the whole report of one phase (the latest by default).

    ``detail`` False computes only the arms, SRM, metrics and guardrails: no timeline,
    heterogeneous effects or off-policy evaluation (what a tuner polling for its measurements needs).
    ``workers``: processes that decode a long log (by default one per core, at most 4; 1: none).
    """
    with ExperimentWatch(
        config,
        name,
        registry=registry,
        phase=phase,
        consumer_config=consumer_config,
        ope_sample=ope_sample,
        detail=detail,
        workers=workers,
    ) as watch:
        return watch.report(as_of=as_of, progress=progress, last=True)


class ExperimentWatch:
    """One experiment phase followed while its logs grow: each `report` reads only the events
    logged since the previous one, then analyses everything gathered so far. A poller (the
    online tuner) pays for what is new, not for the whole log on every poll.

    Arguments as for `analyze_experiment`; the phase is the latest at construction by default.
    ``workers``: processes that decode a long read (by default one per core, at most 4; 1: none).
    """

    def __init__(
        self,
        config: ClosedLoopConfig,
        name: str,
        *,
        registry: ModelRegistry | None = None,
        phase: int | None = None,
        consumer_config: Mapping[str, Any] | None = None,
        ope_sample: int = OPE_SAMPLE,
        detail: bool = True,
        workers: int | None = None,
    ) -> None:
        self.name = name
        self._workers = workers
        self._use_case_name, self._use_case, self._experiment = find_experiment(config, name)
        self._own_registry = registry is None
        self._registry = registry or open_registry(config.infrastructure)
        try:
            current, _ = chosen_phase(self._registry, name, phase)
        except Exception:
            self._close_registry()
            raise
        self.phase = current.phase
        self._detail = detail
        experiment = self._experiment
        self._gatherer = Gatherer(
            self._use_case_name,
            self._use_case,
            current,
            pre_period_seconds=experiment.cuped.pre_period.total_seconds() if experiment.cuped else None,
            breakdowns=_breakdown_features(self._use_case, experiment),
            ope_sample=ope_sample if detail else 0,
        )
        topics = Topics(config.infrastructure.topic_prefix)
        infrastructure = config.infrastructure
        self._decisions = TopicReader(infrastructure, topics.decisions, consumer_config=consumer_config)
        self._feedback = TopicReader(infrastructure, topics.feedback, consumer_config=consumer_config)

    @property
    def records_read(self) -> int:
        """Decision and feedback records read so far, over every report."""
        return self._decisions.records_read + self._feedback.records_read

    def report(
        self, *, as_of: float | None = None, progress: Progress | None = None, last: bool = False
    ) -> ExperimentReport:
        """The phase's report with every event logged until now, windows closed at ``as_of``.
        ``last``: no report follows; what was gathered is let go as the report uses it."""
        say = progress or (lambda _: None)
        current, history = chosen_phase(self._registry, self.name, self.phase)
        models = _champion_models(self._registry, self._use_case_name, self._use_case) if self._detail else {}
        experience = Experience.of(
            self._use_case,
            champion_metadata(self._registry, self._use_case_name, list(self._use_case.outcomes)),
        )
        say("reading decisions")
        read = self._gatherer.read_decisions(self._decisions.read_new_parts(), workers=self._workers)
        self._decisions.count_read(read)
        say("joining feedback")
        self._feedback.count_read(self._gatherer.read_feedback(self._feedback.read_new_parts()))
        now = time.time() if as_of is None else as_of
        data = self._gatherer.finish(as_of=now, last=last)
        return _report(
            self.name,
            self._use_case,
            self._experiment,
            current,
            history,
            data,
            (models, experience),
            now,
            say,
            self._detail,
        )

    def close(self) -> None:
        self._decisions.close()
        self._feedback.close()
        self._close_registry()

    def _close_registry(self) -> None:
        if self._own_registry:
            self._registry.close()

    def __enter__(self) -> ExperimentWatch:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _report(
    name: str,
    use_case: UseCaseConfig,
    experiment: ExperimentConfig,
    current: ExperimentPhase,
    history: list[ExperimentPhase],
    data: LoggedDecisions,
    champions: tuple[dict[str, Any], Experience],
    now: float,
    say: Progress,
    detail: bool = True,
) -> ExperimentReport:
    notes = _data_notes(data, current)
    units = UnitNumbers.of(data)
    arms = _arm_summaries(current, data, units)
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
    metrics = experiment_metrics(use_case, experiment)
    for metric in metrics:
        if not data.reported[:, outcome_columns(use_case, metric)].any() and len(data.decision):
            notes.append(
                f"Metric {metric.name!r}: none of its outcomes was ever reported in this phase; "
                "its values are the outcomes' defaults."
            )
    say("comparing arms")
    results = [
        _with_power(result, current.control, now - current.started_at)
        for result in _metric_results(use_case, experiment, current, data, metrics, units)
    ]
    guardrails = _guardrails(experiment, current, results)
    heterogeneity, ope = [], None
    if detail:
        say("heterogeneous effects")
        heterogeneity = heterogeneous_effects(use_case, experiment, current, data, metrics, units, notes)
        say("off-policy evaluation")
        models, experience = champions
        ope = (
            evaluate_policies(use_case, current, data, models, notes, experience)
            if len(data.sample)
            else None
        )
    timeline = _timeline(use_case, current, data, policy_value(metrics), units) if detail else []
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
        exposure=_exposure(data, units),
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
    if data.inactive or data.abandoned:
        notes.append(
            f"{data.inactive} decisions made with activate=false and never activated, and "
            f"{data.abandoned} the SDK abandoned (it timed out and used its fallback), are not "
            "exposures: they are left out."
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


def _arm_summaries(current: ExperimentPhase, data: LoggedDecisions, units: UnitNumbers) -> list[ArmSummary]:
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
                units=units.count(mask),
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


def _compared_arms(current: ExperimentPhase) -> list[str]:
    names = [a for a in current.arms if a != current.control]
    if current.holdout > 0:
        names.append(HOLDOUT_ARM)
    return names


def _metric_results(
    use_case: UseCaseConfig,
    experiment: ExperimentConfig,
    current: ExperimentPhase,
    data: LoggedDecisions,
    metrics: list[Metric],
    units: UnitNumbers,
) -> list[MetricResult]:
    raw: list[tuple[Metric, list[ArmMetric], list[tuple[str, Comparison | None, Any]]]] = []
    for metric in metrics:
        values = per_decision(use_case, metric, data.outcomes)
        covariates = pre_period_covariates(use_case, data, metric) if experiment.cuped else None
        samples = {}
        for code, arm in enumerate(data.arms):
            mask = data.arm == code
            if mask.any():
                samples[arm] = units.sample(values, metric.per, mask, covariates=covariates)
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
    mean = float(np.mean(values))
    if not math.isfinite(se):
        return ArmMetric(arm=arm, mean=mean, se=None, units=sample.units)
    return ArmMetric(arm=arm, mean=mean, se=se, units=sample.units, low=mean - Z95 * se, high=mean + Z95 * se)


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
        sequential = Interval.finite(comparison.lift, comparison.sequential_low, comparison.sequential_high)
    row = MetricComparison(
        arm=arm,
        lift=Interval.finite(comparison.lift, comparison.lift_low, comparison.lift_high),
        relative=Interval.finite(comparison.relative, comparison.relative_low, comparison.relative_high),
        p_value=comparison.p_value if math.isfinite(comparison.p_value) else None,
        adjusted_p_value=adjusted_p if math.isfinite(adjusted_p) else None,
        significant=bool(math.isfinite(adjusted_p) and adjusted_p < 0.05),
        sequential=sequential,
    )
    if cuped_result is not None:
        adjusted, reduction = cuped_result
        row = row.model_copy(
            update={
                "cuped_lift": Interval.finite(adjusted.lift, adjusted.lift_low, adjusted.lift_high),
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


def _with_power(result: MetricResult, control: str, elapsed: float) -> MetricResult:
    means = {arm.arm: arm.mean for arm in result.arms}
    comparisons = [with_power(c, means.get(control), elapsed) for c in result.comparisons]
    return result.model_copy(update={"comparisons": comparisons})


def _exposure(data: LoggedDecisions, units: UnitNumbers) -> list[ExposurePoint]:
    """Each arm's cumulative decisions and units at evenly spaced times of the phase."""
    if len(data.time) == 0:
        return []
    points = []
    for cutoff in np.linspace(data.time.min(), data.time.max(), TIMELINE_POINTS + 1):
        upto = data.time <= cutoff
        for code, arm in enumerate(data.arms):
            mask = upto & (data.arm == code)
            points.append(
                ExposurePoint(
                    time=float(cutoff),
                    arm=arm,
                    decisions=int(np.count_nonzero(mask)),
                    units=units.count(mask),
                )
            )
    return points


def _timeline(
    use_case: UseCaseConfig,
    current: ExperimentPhase,
    data: LoggedDecisions,
    metric: Metric,
    units: UnitNumbers,
) -> list[TimelinePoint]:
    """The cumulative lift of the policy value, re-estimated at evenly spaced times."""
    if len(data.time) < 2:
        return []
    values = per_decision(use_case, metric, data.outcomes)
    cutoffs = np.linspace(data.time.min(), data.time.max(), TIMELINE_POINTS + 1)[1:]
    treated = [a for a in current.arms if a != current.control]
    control, *arms = (
        units.samples_through(values, metric.per, data.arm == data.arms.index(arm), data.time, cutoffs)
        for arm in [current.control, *treated]
    )
    points = []
    for cutoff, (c_count, c_sample), *samples in zip(cutoffs, control, *arms, strict=True):
        if c_count < 2:
            continue
        for arm, (t_count, t_sample) in zip(treated, samples, strict=True):
            if t_count < 2 or c_sample.units < 2 or t_sample.units < 2:
                continue
            result = welch(c_sample.linearized(), t_sample.linearized())
            points.append(
                TimelinePoint(
                    time=float(cutoff),
                    arm=arm,
                    lift=Interval.finite(result.lift, result.lift_low, result.lift_high),
                )
            )
    return points
