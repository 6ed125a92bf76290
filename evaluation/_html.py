"""The experiment report as one self-contained HTML page: tables, and plots inlined as PNG.

Every number a reader would quote carries a ``data-key`` naming its place in ``report.json``, so a
test (and a curious reader) can check that the page shows exactly what the JSON holds.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from pydantic import BaseModel

matplotlib.use("Agg")  # no display: render to files
import matplotlib.pyplot as plt

from ._report_model import ExperimentReport, Interval, RankingOpe

_BASE_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3rem 0.7rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img { max-width: 100%; }
"""

_STYLE = """
.banner { padding: 0.8rem 1rem; border-radius: 6px; margin: 0.5rem 0; }
.srm { background: #fdd; border: 2px solid #c00; font-weight: bold; }
.ok { background: #efe; border: 1px solid #6a6; }
.note { background: #ffe; border: 1px solid #cc6; }
.win { color: #070; font-weight: bold; } .loss { color: #b00; font-weight: bold; }
"""


def html_page(title: str, sections: Sequence[str], style: str = "") -> str:
    """A self-contained report page: the reports' shared style plus ``style``, then the sections."""
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_BASE_STYLE}{style}</style></head><body>{''.join(sections)}</body></html>"
    )


def write_page_files(directory: Path, stem: str, numbers: BaseModel, page: str) -> tuple[Path, Path]:
    """Write ``<stem>.html`` and ``<stem>.json`` (the numbers behind the page) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / f"{stem}.json"
    json_path.write_text(numbers.model_dump_json(indent=2))
    html_path = directory / f"{stem}.html"
    html_path.write_text(page)
    return html_path, json_path


def write_report_files(report: ExperimentReport, directory: Path) -> tuple[Path, Path]:
    """Write ``report.html``, ``report.json`` and ``report.csv`` (the metrics table) into
    ``directory``; returns the first two paths."""
    paths = write_page_files(directory, "report", report, render_html(report))
    (directory / "report.csv").write_text(report_csv(report), encoding="utf-8")
    return paths


CSV_COLUMNS = [
    "metric", "arm", "control", "units", "mean", "mean_low", "mean_high", "lift", "lift_low", "lift_high",
    "relative", "relative_low", "relative_high", "p_value", "adjusted_p_value", "significant", "mde",
    "mde_relative", "seconds_to_decision",
]  # fmt: skip


def report_csv(report: ExperimentReport) -> str:
    """One row per metric and arm: its mean with a 95% interval and, against the control, the
    lift, relative lift, p-values and power (relative values as fractions, as in the JSON)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    for metric in report.metrics:
        compared = {c.arm: c for c in metric.comparisons}
        for arm in metric.arms:
            low, high = arm.low, arm.high
            c = compared.get(arm.arm)
            versus = [] if c is None else [
                c.lift.estimate, c.lift.low, c.lift.high, c.relative.estimate, c.relative.low, c.relative.high,
                c.p_value, c.adjusted_p_value, c.significant, c.mde, c.mde_relative, c.seconds_to_decision,
            ]  # fmt: skip
            row = [metric.name, arm.arm, arm.arm == report.control, arm.units, arm.mean, low, high, *versus]
            writer.writerow(["" if v is None else v for v in row] + [""] * (len(CSV_COLUMNS) - len(row)))
    return buffer.getvalue()


def render_html(report: ExperimentReport) -> str:
    sections = [
        _header(report),
        _banners(report),
        _arms(report),
        _exposure(report),
        _metrics(report),
        _guardrails(report),
        _timeline(report),
        _heterogeneity(report),
        _ope(report),
    ]
    return html_page(f"Experiment {report.experiment}", sections, _STYLE)


def _time(seconds: float | None) -> str:
    if seconds is None:
        return "running"
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _number(value: float | None, key: str, digits: int = 4) -> str:
    text = "&ndash;" if value is None else f"{value:.{digits}g}"
    return f"<span data-key='{html.escape(key)}'>{text}</span>"


def _p_value(value: float | None, key: str) -> str:
    """A p-value as people read one: "<0.001" rather than 4.43e-34."""
    if value is None:
        return f"<span data-key='{html.escape(key)}'>&ndash;</span>"
    text = "&lt;0.001" if value < 0.001 else f"{value:.3f}"
    return f"<span data-key='{html.escape(key)}'>{text}</span>"


def _percent(value: float | None, key: str) -> str:
    text = "&ndash;" if value is None else f"{value * 100:.3g}%"
    return f"<span data-key='{html.escape(key)}'>{text}</span>"


def _duration(seconds: float | None, key: str) -> str:
    if seconds is None:
        text = "&ndash;"
    elif seconds == 0:
        text = "now (significant)"
    elif seconds < 3600:
        text = f"{seconds / 60:.0f} min"
    elif seconds < 3 * 86400:
        text = f"{seconds / 3600:.1f} h"
    else:
        text = f"{seconds / 86400:.1f} days"
    return f"<span data-key='{html.escape(key)}' data-seconds='{seconds if seconds is not None else ''}'>{text}</span>"


def _interval(interval: Interval | None, key: str, *, percent: bool = False) -> str:
    if interval is None or interval.estimate is None:
        return "&ndash;"
    scale, suffix = (100.0, "%") if percent else (1.0, "")

    def show(value: float | None, part: str) -> str:
        text = "&ndash;" if value is None else f"{value * scale:.3g}{suffix}"
        return f"<span data-key='{html.escape(key)}.{part}'>{text}</span>"

    return (
        f"{show(interval.estimate, 'estimate')} [{show(interval.low, 'low')}, {show(interval.high, 'high')}]"
    )


def _floats(values: list[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def inline_png(figure: Any) -> str:
    """A matplotlib figure as an <img> with the PNG inlined (the figure is closed)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return f"<img alt='plot' src='data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}'>"


def _header(report: ExperimentReport) -> str:
    return (
        f"<h1>Experiment <code>{html.escape(report.experiment)}</code> on "
        f"<code>{html.escape(report.use_case)}</code></h1>"
        f"<p>{html.escape(report.description)}</p>"
        f"<p>Phase <span data-key='phase'>{report.phase}</span> of {len(report.phases)}: "
        f"{_time(report.started_at)} &ndash; {_time(report.stopped_at)}; analysed {_time(report.as_of)}. "
        f"Control: <b>{html.escape(report.control)}</b>. Intervals are 95%; p-values corrected by "
        f"<b data-key='correction'>{html.escape(report.correction)}</b> across metrics and arms.</p>"
    )


def _banners(report: ExperimentReport) -> str:
    parts = []
    if report.srm.mismatch:
        parts.append(
            "<div class='banner srm' data-key='srm.mismatch'>Sample ratio mismatch (p = "
            f"{_number(report.srm.p_value, 'srm.p_value', 3)}): the arms did not get the traffic "
            "they were configured for. Find the cause before reading any effect.</div>"
        )
    else:
        parts.append(
            "<div class='banner ok'>Traffic split as configured (sample ratio check p = "
            f"{_number(report.srm.p_value, 'srm.p_value', 3)}).</div>"
        )
    parts.extend(f"<div class='banner note'>{html.escape(note)}</div>" for note in report.notes)
    return "".join(parts)


def _arms(report: ExperimentReport) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(a.name)}{' (control)' if a.control else ''}</td><td>{a.share:.3g}</td>"
        f"<td>{_number(a.units, f'arms.{i}.units', 12)}</td><td>{_number(a.decisions, f'arms.{i}.decisions', 12)}</td></tr>"
        for i, a in enumerate(report.arms)
    )
    return f"<h2>Arms</h2><table><tr><th>arm</th><th>share</th><th>units</th><th>decisions</th></tr>{rows}</table>"


def _metrics(report: ExperimentReport) -> str:
    parts = [
        "<h2>Metrics</h2><p class='note'>Relative changes, margins and the minimum detectable effect "
        "are in percent of the control's mean; means and lifts in the metric's own unit. The minimum "
        "detectable effect is at 80% power and 5% (two-sided); the time to a decision assumes the "
        "traffic so far and that the observed lift is real.</p>"
    ]
    for m, metric in enumerate(report.metrics):
        mean_rows = "".join(
            f"<tr><td>{html.escape(a.arm)}</td><td>{_number(a.units, f'metrics.{m}.arms.{i}.units', 12)}</td>"
            f"<td>{_number(a.mean, f'metrics.{m}.arms.{i}.mean')} "
            f"[{_number(a.low, f'metrics.{m}.arms.{i}.low')}, {_number(a.high, f'metrics.{m}.arms.{i}.high')}]</td></tr>"
            for i, a in enumerate(metric.arms)
        )
        means = f"<table><tr><th>arm</th><th>units</th><th>mean [95% CI]</th></tr>{mean_rows}</table>"
        rows = []
        for c, comp in enumerate(metric.comparisons):
            key = f"metrics.{m}.comparisons.{c}"
            mark = ""
            if comp.significant and comp.lift.estimate is not None:
                good = (comp.lift.estimate > 0) == metric.higher_is_better
                mark = "<span class='win'>better</span>" if good else "<span class='loss'>worse</span>"
            extra = ""
            if comp.sequential is not None:
                extra += f"<br>anytime-valid: {_interval(comp.sequential, key + '.sequential')}"
            if comp.cuped_lift is not None:
                extra += (
                    f"<br>CUPED: {_interval(comp.cuped_lift, key + '.cuped_lift')} (variance "
                    f"&minus;{_number(comp.cuped_variance_reduction, key + '.cuped_variance_reduction', 3)})"
                )
            rows.append(
                f"<tr><td>{html.escape(comp.arm)}</td><td>{_interval(comp.lift, key + '.lift')}{extra}</td>"
                f"<td>{_interval(comp.relative, key + '.relative', percent=True)}</td>"
                f"<td>{_p_value(comp.p_value, key + '.p_value')}</td>"
                f"<td>{_p_value(comp.adjusted_p_value, key + '.adjusted_p_value')}</td>"
                f"<td>{_percent(comp.mde_relative, key + '.mde_relative')}</td>"
                f"<td>{_duration(comp.seconds_to_decision, key + '.seconds_to_decision')}</td><td>{mark}</td></tr>"
            )
        parts.append(
            f"<h3>{html.escape(metric.name)} <small>({html.escape(metric.value)}, per {metric.per})</small></h3>"
            f"{means}<table><tr><th>arm vs control</th><th>lift [95% CI]</th>"
            f"<th>relative [95% CI]</th><th>p</th><th>adjusted p</th><th>minimum detectable effect</th>"
            f"<th>time to a decision</th><th></th></tr>{''.join(rows)}</table>"
        )
    parts.append(_lift_plot(report))
    return "".join(parts)


def _lift_plot(report: ExperimentReport) -> str:
    rows = [
        (f"{m.name}: {c.arm}", c.relative)
        for m in report.metrics
        for c in m.comparisons
        if c.relative.estimate is not None and c.relative.low is not None and c.relative.high is not None
    ]
    if not rows:
        return ""
    figure, axis = plt.subplots(figsize=(7, 0.45 * len(rows) + 1))
    estimate = 100 * _floats([r.estimate for _, r in rows])
    low, high = 100 * _floats([r.low for _, r in rows]), 100 * _floats([r.high for _, r in rows])
    axis.errorbar(estimate, range(len(rows)), xerr=[estimate - low, high - estimate], fmt="o", capsize=4)
    axis.axvline(0, color="grey", linewidth=1)
    axis.set_yticks(range(len(rows)), [label for label, _ in rows])
    axis.set_xlabel("relative lift vs control (%), 95% interval")
    return inline_png(figure)


def _guardrails(report: ExperimentReport) -> str:
    if not report.guardrails:
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(g.metric)}</td><td>{html.escape(g.arm)}</td>"
        f"<td>{_percent(g.margin, f'guardrails.{i}.margin')}</td>"
        f"<td>{_percent(g.relative_low, f'guardrails.{i}.relative_low')}</td>"
        f"<td data-key='guardrails.{i}.passed'>{ {True: 'pass', False: 'FAIL', None: 'unknown'}[g.passed] }</td></tr>"
        for i, g in enumerate(report.guardrails)
    )
    return (
        "<h2>Guardrails</h2><table><tr><th>metric</th><th>arm</th><th>margin</th>"
        f"<th>worst plausible relative change</th><th>verdict</th></tr>{rows}</table>"
    )


def _exposure(report: ExperimentReport) -> str:
    if not report.exposure:
        return ""
    figure, axis = plt.subplots(figsize=(7, 2.8))
    for arm in sorted({p.arm for p in report.exposure}):
        points = [p for p in report.exposure if p.arm == arm]
        hours = [(p.time - report.started_at) / 3600 for p in points]
        axis.plot(hours, [p.units for p in points], marker=".", label=arm)
    axis.set_xlabel("hours since the phase started")
    axis.set_ylabel("units exposed (cumulative)")
    axis.legend()
    return "<h2>Exposure over time</h2>" + inline_png(figure)


def _timeline(report: ExperimentReport) -> str:
    if not report.timeline:
        return ""
    figure, axis = plt.subplots(figsize=(7, 3))
    for arm in sorted({p.arm for p in report.timeline}):
        points = [
            p for p in report.timeline if p.arm == arm and p.lift.low is not None and p.lift.high is not None
        ]
        hours = [(p.time - report.started_at) / 3600 for p in points]
        axis.plot(hours, _floats([p.lift.estimate for p in points]), marker="o", label=arm)
        axis.fill_between(
            hours, _floats([p.lift.low for p in points]), _floats([p.lift.high for p in points]), alpha=0.2
        )
    axis.axhline(0, color="grey", linewidth=1)
    axis.set_xlabel("hours since the phase started")
    axis.set_ylabel("cumulative lift of the policy value")
    axis.legend()
    return "<h2>Cumulative effect over time</h2>" + inline_png(figure)


def _heterogeneity(report: ExperimentReport) -> str:
    parts = []
    for h, effects in enumerate(report.heterogeneity):
        gains = ", ".join(effects.gains) or "none"
        losses = ", ".join(effects.losses) or "none"
        rows = "".join(
            f"<tr><td>{html.escape(s.feature)} = {html.escape(s.segment)}</td><td>{s.units}</td>"
            f"<td>{_interval(s.lift, f'heterogeneity.{h}.breakdowns.{i}.lift')}</td></tr>"
            for i, s in enumerate(effects.breakdowns)
        )
        parts.append(
            f"<h2>Who gains: {html.escape(effects.arm)} vs control on {html.escape(effects.metric)}</h2>"
            f"<p class='win'>Segments that gain: <span data-key='heterogeneity.{h}.gains'>{html.escape(gains)}</span></p>"
            f"<p class='loss'>Segments that lose: <span data-key='heterogeneity.{h}.losses'>{html.escape(losses)}</span></p>"
            f"<table><tr><th>segment</th><th>units</th><th>lift [95% CI]</th></tr>{rows}</table>"
            f"<p><small>{html.escape(effects.method)}</small></p>"
        )
        if effects.cate_groups:
            figure, axis = plt.subplots(figsize=(6, 2.8))
            groups = [g for g in effects.cate_groups if g.effect.estimate is not None]
            estimate = _floats([g.effect.estimate for g in groups])
            low, high = _floats([g.effect.low for g in groups]), _floats([g.effect.high for g in groups])
            axis.errorbar(
                [g.group for g in groups],
                estimate,
                yerr=[estimate - low, high - estimate],
                fmt="o",
                capsize=4,
            )
            axis.axhline(0, color="grey", linewidth=1)
            axis.set_xlabel("fifth of units by predicted effect (1 = lowest)")
            axis.set_ylabel("effect, 95% interval")
            parts.append(inline_png(figure))
    return "".join(parts)


def _ope(report: ExperimentReport) -> str:
    if report.ope is None:
        return ""
    ope = report.ope
    rows = "".join(
        f"<tr><td>{html.escape(p.policy)}<br><small>{html.escape(p.description)}</small></td>"
        f"<td>{_interval(p.ips, f'ope.policies.{i}.ips')}</td><td>{_interval(p.snips, f'ope.policies.{i}.snips')}</td>"
        f"<td>{_interval(p.direct, f'ope.policies.{i}.direct')}</td>"
        f"<td>{_interval(p.doubly_robust, f'ope.policies.{i}.doubly_robust')}</td>"
        f"<td>{_number(p.effective_sample_size, f'ope.policies.{i}.effective_sample_size', 5)}</td></tr>"
        for i, p in enumerate(ope.policies)
    )
    return (
        "<h2>Off-policy evaluation</h2>"
        f"<p>Estimated value ({html.escape(ope.reward)}) of each policy had it served all traffic, from "
        f"{ope.sample} logged decisions; logged value: {_interval(ope.logged_value, 'ope.logged_value')}.</p>"
        "<table><tr><th>policy</th><th>IPS</th><th>SNIPS</th><th>direct</th><th>doubly robust</th>"
        f"<th>effective sample size</th></tr>{rows}</table>"
        f"{_ranking_ope(ope.ranking)}"
    )


def _ranking_ope(ranking: RankingOpe | None) -> str:
    if ranking is None:
        return ""
    rows = "".join(
        f"<tr><td>{html.escape(p.policy)}</td>"
        f"<td>{_interval(p.ips, f'ope.ranking.policies.{i}.ips')}</td>"
        f"<td>{_interval(p.snips, f'ope.ranking.policies.{i}.snips')}</td>"
        f"<td>{_number(p.effective_sample_size, f'ope.ranking.policies.{i}.effective_sample_size', 5)}</td></tr>"
        for i, p in enumerate(ranking.policies)
    )
    return (
        "<h3>Rankings, slot by slot</h3>"
        f"<p>The value summed over the shown slots (up to {ranking.slots}) of "
        f"{_number(ranking.rankings, 'ope.ranking.rankings', 9)} rankings decided with slots, each slot's "
        "reward reweighted by the policies' probabilities down to it (cascade IPS); logged: "
        f"{_interval(ranking.logged_value, 'ope.ranking.logged_value')}.</p>"
        "<table><tr><th>policy</th><th>cascade IPS</th><th>self-normalised</th>"
        f"<th>effective sample size</th></tr>{rows}</table>"
    )
