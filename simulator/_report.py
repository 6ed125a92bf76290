"""The demo's report: one self-contained HTML file (plots inlined as PNG) and a JSON summary."""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: render to files
import matplotlib.pyplot as plt

from ._demo import DemoResult


def summary(result: DemoResult) -> dict[str, Any]:
    return {
        "rounds": [asdict(r) for r in result.rounds],
        "evaluation": result.evaluation,
        "live": result.live,
        "trainer_counters": result.trainer_counters,
        "training_runs": [
            {
                "run_id": run.run_id,
                "outcome": run.outcome,
                "version": run.version,
                "promoted": run.promoted,
                "reason": run.reason,
                "metrics": run.report.get("metrics"),
                "champion_metrics": run.report.get("champion_metrics"),
                "rows_train": run.report.get("lineage", {}).get("rows_train"),
            }
            for run in result.runs
        ],
    }


def write_report(result: DemoResult, directory: Path) -> tuple[Path, Path]:
    """Write ``report.html`` and ``summary.json`` into ``directory``; returns both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    data = summary(result)
    json_path = directory / "summary.json"
    json_path.write_text(json.dumps(data, indent=2))
    html_path = directory / "report.html"
    html_path.write_text(_html(result, data))
    return html_path, json_path


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return base64.b64encode(buffer.getvalue()).decode()


def _reward_plot(result: DemoResult) -> str:
    figure, axis = plt.subplots(figsize=(8, 3.6))
    rounds = [r.round for r in result.rounds]
    axis.plot(
        rounds, [r.expected_reward for r in result.rounds], marker="o", label="served policy (expected)"
    )
    axis.plot(
        rounds,
        [r.realized_reward for r in result.rounds],
        marker=".",
        alpha=0.6,
        label="served policy (realized)",
    )
    axis.plot(rounds, [r.oracle_reward for r in result.rounds], linestyle="--", color="gray", label="oracle")
    for r in result.rounds:
        if r.model_share > 0:
            axis.axvspan(r.round - 0.5, r.round + 0.5, color="tab:green", alpha=0.08 * r.model_share)
    axis.set_xlabel("round (one simulated hour; shaded: the learned policy serves)")
    axis.set_ylabel("reward per decision\n(click + 2 x purchase)")
    axis.set_ylim(bottom=0)
    axis.legend(loc="lower right", fontsize=8)
    axis.grid(alpha=0.3)
    return _png(figure)


def _metrics_plot(result: DemoResult) -> str:
    outcomes = sorted({run.outcome for run in result.runs if run.version})
    figure, axes = plt.subplots(
        1, max(1, len(outcomes)), figsize=(4 * max(1, len(outcomes)), 3.2), squeeze=False
    )
    for axis, outcome in zip(axes[0], outcomes, strict=False):
        runs = [run for run in result.runs if run.outcome == outcome and run.version]
        metric = (
            "auc"
            if all("auc" in run.report["metrics"] for run in runs)
            else next(iter(runs[0].report["metrics"]))
        )
        x = list(range(len(runs)))
        axis.plot(x, [run.report["metrics"][metric] for run in runs], color="tab:blue", label="challenger")
        champion = [(i, (run.report.get("champion_metrics") or {}).get(metric)) for i, run in enumerate(runs)]
        axis.plot(
            [i for i, v in champion if v is not None],
            [v for _, v in champion if v is not None],
            color="tab:orange",
            linestyle=":",
            label="champion (same held-out rows)",
        )
        for i, run in enumerate(runs):
            axis.scatter(
                i,
                run.report["metrics"][metric],
                marker="o" if run.promoted else "x",
                color="tab:green" if run.promoted else "tab:red",
                zorder=3,
            )
        axis.set_xticks(x, [run.version or "" for run in runs])
        axis.set_title(f"{outcome}: held-out {metric.upper()}")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=7)
    return _png(figure)


def _interval(value: dict[str, float]) -> str:
    return f"{value['estimate']:.3f} <span class=ci>[{value['low']:.3f}, {value['high']:.3f}]</span>"


def _policy_rows(evaluation: dict[str, Any]) -> str:
    labels = (
        ("default", "default (the product's own order)"),
        ("learned", "learned (greedy on the served models)"),
        ("oracle", "oracle (knows the truth)"),
        ("lift_over_default", "learned - default"),
    )
    return "\n".join(
        f'<tr><td>{label}</td><td data-key="{key}">{_interval(evaluation[key])}</td></tr>'
        for key, label in labels
    )


def _html(result: DemoResult, data: dict[str, Any]) -> str:
    evaluation = result.evaluation
    rows = "".join(
        f"<tr><td>{run.run_id}</td><td>{html.escape(run.outcome)}</td>"
        f"<td>{html.escape(run.version or '-')}</td>"
        f"<td class={'ok' if run.promoted else 'bad'}>{'promoted' if run.promoted else 'not promoted'}</td>"
        f"<td>{html.escape(run.reason)}</td></tr>"
        for run in result.runs
    )
    live = result.live.get("difference")
    live_text = (
        f"<p>Live traffic: learned policy {result.live['reward_model']:.3f} vs default "
        f"{result.live['reward_default']:.3f} per decision; difference {_interval(live)} (Welch, 95%).</p>"
        if live
        else ""
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>closedloop demo report</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 960px; margin: 2em auto; color: #222; }}
table {{ border-collapse: collapse; width: 100%; font-size: 0.9em; }}
td, th {{ border-bottom: 1px solid #ddd; padding: 4px 8px; text-align: left; }}
.ci {{ color: #666; }} .ok {{ color: #1a7f37; }} .bad {{ color: #b42318; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>closedloop demo: the loop learning a simulated product</h1>
<h2>Policies on {evaluation["requests"]} fresh requests</h2>
<p>Expected reward per decision from the hidden truth, with 95% intervals.</p>
<table id="evaluation">
<tr><th>policy</th><th>reward per decision</th></tr>
{_policy_rows(evaluation)}
</table>
<p>The learned policy reaches <b>{100 * evaluation["share_of_oracle"]:.1f}%</b> of the oracle's reward.</p>
{live_text}
<h2>Reward over time</h2>
<img alt="reward per round" src="data:image/png;base64,{_reward_plot(result)}">
<h2>Model versions</h2>
<img alt="model metrics per version" src="data:image/png;base64,{_metrics_plot(result)}">
<table id="runs"><tr><th>run</th><th>outcome</th><th>version</th><th>gate</th><th>why</th></tr>{rows}</table>
<h2>Trainer counters</h2>
<pre>{html.escape(json.dumps(data["trainer_counters"], indent=2))}</pre>
</body></html>
"""
