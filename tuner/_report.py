"""The tuning report: every trial with its measurements and intervals, the status quo of each round,
the recommendation, and the Pareto front for several objectives — as ``tuning.json`` and one
self-contained HTML page with inlined plots, like the experiment reports."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: render to files
import matplotlib.pyplot as plt
from pydantic import BaseModel, ConfigDict

from closedloop.evaluation import html_page, inline_png, write_page_files

from ._space import TuningSpace
from ._store import TuningStore

Z95 = 1.959963984540054


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MetricValue(_Model):
    mean: float
    se: float
    low: float
    high: float


class TrialRow(_Model):
    trial_index: int
    round: int
    arm: str
    parameters: dict[str, float]
    status: str
    units: int | None
    objective: float | None
    """The scalar objective's measured value (None for Pareto objectives or unmeasured trials)."""
    objective_se: float | None
    metrics: dict[str, MetricValue]
    violations: list[str]


class RoundRow(_Model):
    round: int
    status: str
    phase: int | None
    baseline: dict[str, MetricValue]
    baseline_objective: float | None
    baseline_objective_se: float | None = None


class VersusStatusQuo(_Model):
    """A recommended trial's objective against its round's status quo arm, measured side by side."""

    trial_index: int
    difference: float
    low: float
    high: float
    distinguishable: bool
    """False when the 95% interval of the difference includes 0: the data cannot tell the
    recommendation from keeping the current configuration."""


class TuningReport(_Model):
    run: str
    use_case: str
    mode: str
    method: str
    status: str
    rounds_done: int
    rounds_planned: int
    objective: str
    constraints: list[str]
    trials: list[TrialRow]
    rounds: list[RoundRow]
    recommendation: dict[str, Any] | None
    pareto_metrics: list[str]
    versus_status_quo: list[VersusStatusQuo] = []


def _values(measurement: dict[str, tuple[float, float]] | None) -> dict[str, MetricValue]:
    return {
        name: MetricValue(mean=m, se=s, low=m - Z95 * s, high=m + Z95 * s)
        for name, (m, s) in (measurement or {}).items()
        if math.isfinite(m) and math.isfinite(s)
    }


def tuning_report(store: TuningStore, run: str, space: TuningSpace) -> TuningReport:
    record = store.run(run)
    if record is None:
        raise KeyError(run)
    objective = space.tuning.objective
    trials = [
        TrialRow(
            trial_index=t.trial_index,
            round=t.round,
            arm=t.arm,
            parameters={k: float(v) for k, v in t.parameters.items()},
            status=t.status,
            units=t.units,
            objective=space.scalar_objective(t.measurement) if t.measurement else None,
            objective_se=space.scalar_objective_se(t.measurement) if t.measurement else None,
            metrics=_values(t.measurement),
            violations=space.violations(t.measurement) if t.measurement else [],
        )
        for t in store.trials(run)
    ]
    rounds = [
        RoundRow(
            round=r.round,
            status=r.status,
            phase=r.phase,
            baseline=_values(r.baseline),
            baseline_objective=space.scalar_objective(r.baseline) if r.baseline else None,
            baseline_objective_se=space.scalar_objective_se(r.baseline) if r.baseline else None,
        )
        for r in store.rounds(run)
    ]
    return TuningReport(
        run=run,
        use_case=record.use_case,
        mode=record.mode,
        method=record.method,
        status=record.status,
        rounds_done=record.rounds_done,
        rounds_planned=space.tuning.rounds,
        objective=space.ax_objective(),
        constraints=list(space.tuning.constraints),
        trials=trials,
        rounds=rounds,
        recommendation=record.recommendation,
        pareto_metrics=list(objective.pareto or []),
        versus_status_quo=_versus_status_quo(record.recommendation, trials, rounds),
    )


def _versus_status_quo(
    recommendation: dict[str, Any] | None, trials: list[TrialRow], rounds: list[RoundRow]
) -> list[VersusStatusQuo]:
    by_index = {t.trial_index: t for t in trials}
    by_round = {r.round: r for r in rounds}
    rows = []
    for configuration in (recommendation or {}).get("configurations", []):
        trial = by_index.get(configuration["trial_index"])
        base = by_round.get(trial.round) if trial else None
        if trial is None or base is None or trial.objective is None or base.baseline_objective is None:
            continue
        se = math.hypot(trial.objective_se or 0.0, base.baseline_objective_se or 0.0)
        difference = trial.objective - base.baseline_objective
        low, high = difference - Z95 * se, difference + Z95 * se
        rows.append(
            VersusStatusQuo(
                trial_index=trial.trial_index,
                difference=difference,
                low=low,
                high=high,
                distinguishable=not low <= 0.0 <= high,
            )
        )
    return rows


def write_tuning_report(report: TuningReport, directory: Path) -> tuple[Path, Path]:
    """Write ``tuning.html`` and ``tuning.json`` into ``directory``; returns both paths."""
    return write_page_files(directory, "tuning", report, render_tuning_html(report))


_STYLE = """
.box { padding: 0.8rem 1rem; border-radius: 6px; margin: 0.5rem 0; background: #efe; border: 1px solid #6a6; }
.bad { color: #b00; font-weight: bold; }
pre { background: #f6f6f6; padding: 0.6rem; }
"""


def render_tuning_html(report: TuningReport) -> str:
    sections = [_header(report), _recommendation(report), _progress_plot(report)]
    if len(report.pareto_metrics) >= 2:
        sections.append(_pareto_plot(report))
    sections += [_trials_table(report), _rounds_table(report)]
    return html_page(f"Tuning {report.run}", sections, _STYLE)


def _header(report: TuningReport) -> str:
    constraints = ", ".join(html.escape(c) for c in report.constraints) or "none"
    return (
        f"<h1>Tuning {html.escape(report.use_case)} ({report.mode}, {report.method})</h1>"
        f"<p>Status <b data-key='status'>{report.status}</b>; rounds "
        f"<span data-key='rounds_done'>{report.rounds_done}</span> of {report.rounds_planned}. "
        f"Objective (Ax): <code>{html.escape(report.objective)}</code>. Constraints: {constraints}.</p>"
    )


def _recommendation(report: TuningReport) -> str:
    if not report.recommendation:
        return "<p>No recommendation yet: it is made when the last round has been measured.</p>"
    parts = ["<h2>Recommendation</h2>"]
    versus = {v.trial_index: v for v in report.versus_status_quo}
    for i, configuration in enumerate(report.recommendation["configurations"]):
        parameters = ", ".join(f"{k} = {v:.4g}" for k, v in configuration["parameters"].items())
        violations = configuration.get("observed_violations") or []
        warn = (
            f"<p class='bad'>Its observed measurement broke: {html.escape(', '.join(violations))}</p>"
            if violations
            else ""
        )
        parts.append(
            f"<div class='box'><p>Trial <span data-key='recommendation.configurations.{i}.trial_index'>"
            f"{configuration['trial_index']}</span>: {html.escape(parameters)}</p>"
            f"<pre>{html.escape(_yaml_hint(configuration))}</pre>{warn}"
            f"{_versus(versus.get(configuration['trial_index']))}</div>"
        )
    return "".join(parts)


def _versus(row: VersusStatusQuo | None) -> str:
    if row is None:
        return ""
    interval = f"{row.difference:+.4g} [{row.low:+.4g}, {row.high:+.4g}]"
    if row.distinguishable:
        return f"<p>Against the status quo of its round: {interval} (95%).</p>"
    return (
        f"<p class='bad' data-key='not-distinguishable'>Not distinguishable from the status quo: "
        f"{interval} (95%) includes 0. The data cannot tell this configuration from the current one; "
        "run more rounds (or let rounds run longer) before changing anything.</p>"
    )


def _yaml_hint(configuration: dict[str, Any]) -> str:
    lines = ["# in the use case's policy:"]
    policy = configuration.get("policy") or {}
    if "value" in policy:
        lines.append(f'value: "{policy["value"]}"')
    for key in ("epsilon", "temperature", "gamma_scale"):
        if key in policy:
            lines.append(f"exploration: {{{key}: {policy[key]:.4g}}}")
    if "threshold" in policy:
        lines.append(f"threshold: {policy['threshold']:.4g}")
    for key, value in (configuration.get("model") or {}).items():
        lines.append(f"model.{key}: {value}")
    return "\n".join(lines)


def _progress_plot(report: TuningReport) -> str:
    measured = [t for t in report.trials if t.objective is not None]
    if not measured:
        return ""
    figure, axes = plt.subplots(figsize=(8, 3.5))
    errors = [Z95 * (t.objective_se or 0.0) for t in measured]
    axes.errorbar(
        [t.trial_index for t in measured],
        [t.objective or 0.0 for t in measured],  # measured: every objective is set
        yerr=errors,
        fmt="o",
        label="trial (95% interval)",
    )
    best: list[float] = []
    for t in measured:
        value = t.objective if not t.violations else None
        previous = best[-1] if best else -math.inf
        best.append(max(previous, value) if value is not None else previous)
    axes.step([t.trial_index for t in measured], best, where="post", label="best feasible so far")
    baselines = [(r.round, r.baseline_objective) for r in report.rounds if r.baseline_objective is not None]
    if baselines:
        first = {r: min(t.trial_index for t in measured if t.round == r) for r, _ in baselines}
        axes.scatter(
            [first[r] for r, _ in baselines], [v for _, v in baselines], marker="x", label="status quo"
        )
    axes.set_xlabel("trial")
    axes.set_ylabel("objective")
    axes.legend(loc="lower right", fontsize=8)
    return "<h2>Objective by trial</h2>" + inline_png(figure)


def _pareto_plot(report: TuningReport) -> str:
    x_name, y_name = report.pareto_metrics[:2]
    points = [t for t in report.trials if x_name in t.metrics and y_name in t.metrics]
    if not points:
        return ""
    figure, axes = plt.subplots(figsize=(6, 4.5))
    axes.errorbar(
        [t.metrics[x_name].mean for t in points],
        [t.metrics[y_name].mean for t in points],
        xerr=[Z95 * t.metrics[x_name].se for t in points],
        yerr=[Z95 * t.metrics[y_name].se for t in points],
        fmt="o",
        alpha=0.6,
        label="trials",
    )
    front = {c["trial_index"] for c in (report.recommendation or {}).get("configurations", [])}
    on_front = [t for t in points if t.trial_index in front]
    if on_front:
        on_front.sort(key=lambda t: t.metrics[x_name].mean)
        axes.plot(
            [t.metrics[x_name].mean for t in on_front],
            [t.metrics[y_name].mean for t in on_front],
            "r-o",
            label="Pareto front",
        )
    axes.set_xlabel(x_name)
    axes.set_ylabel(y_name)
    axes.legend(fontsize=8)
    return "<h2>Pareto front</h2>" + inline_png(figure)


def _trials_table(report: TuningReport) -> str:
    metric_names = sorted({name for t in report.trials for name in t.metrics})
    parameter_names = sorted({name for t in report.trials for name in t.parameters})
    head = "".join(f"<th>{html.escape(n)}</th>" for n in ["trial", "round", *parameter_names, "units"])
    head += (
        "".join(f"<th>{html.escape(n)} (95%)</th>" for n in metric_names)
        + "<th>objective</th><th>violates</th>"
    )
    rows = []
    for i, t in enumerate(report.trials):
        cells = [f"<td>{t.trial_index}</td>", f"<td>{t.round}</td>"]
        cells += [f"<td>{t.parameters.get(n, math.nan):.4g}</td>" for n in parameter_names]
        cells.append(f"<td>{t.units if t.units is not None else '—'}</td>")
        for name in metric_names:
            value = t.metrics.get(name)
            if value is None:
                cells.append("<td>—</td>")
            else:
                cells.append(
                    f"<td><span data-key='trials.{i}.metrics.{name}.mean'>{value.mean:.4g}</span> "
                    f"[{value.low:.4g}, {value.high:.4g}]</td>"
                )
        objective = f"{t.objective:.4g}" if t.objective is not None else "—"
        cells.append(f"<td data-key='trials.{i}.objective'>{objective}</td>")
        cells.append(f"<td class='bad'>{html.escape(', '.join(t.violations))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<h2>Trials</h2><table><tr>{head}</tr>{''.join(rows)}</table>"


def _rounds_table(report: TuningReport) -> str:
    metric_names = sorted({name for r in report.rounds for name in r.baseline})
    head = "<th>round</th><th>status</th><th>phase</th>" + "".join(
        f"<th>status quo {html.escape(n)}</th>" for n in metric_names
    )
    rows = []
    for r in report.rounds:
        cells = [f"<td>{r.round}</td>", f"<td>{r.status}</td>", f"<td>{r.phase or '—'}</td>"]
        for name in metric_names:
            value = r.baseline.get(name)
            cells.append(f"<td>{value.mean:.4g} ± {Z95 * value.se:.2g}</td>" if value else "<td>—</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<h2>Rounds (the status-quo arm of each)</h2><table><tr>{head}</tr>{''.join(rows)}</table>"
