"""What the console shows, read from the stores the service and the trainer write: the registry
(champions, versions, lineage), the trainer's metadata database (runs, activity, how far behind it
is) and the tuner's runs. Plain dicts, the same for the pages and the JSON API."""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import numpy as np

from closedloop.contracts import ClosedLoopConfig
from closedloop.registry import ModelRegistry


def iso(timestamp: float | None) -> str | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def model_listing(
    config: ClosedLoopConfig, registry: ModelRegistry, only: str | None = None
) -> dict[str, Any]:
    """Per use case and outcome: champion, pinned version, every version's metadata (ISO times)."""
    use_cases = {n: uc for n, uc in config.use_cases.items() if only is None or n == only}
    return {
        "use_cases": {
            name: {
                outcome: {
                    "champion": registry.champion(name, outcome),
                    "pinned": registry.pinned(name, outcome),
                    "versions": [
                        {
                            "version": v.version,
                            "published": iso(v.metadata.get("published_at")),
                            "metadata": dict(v.metadata),
                        }
                        for v in registry.versions(name, outcome)
                    ],
                }
                for outcome in use_case.outcomes
            }
            for name, use_case in use_cases.items()
        }
    }


def version_summary(version: dict[str, Any], champion: str | None, pinned: str | None) -> dict[str, Any]:
    """One version of `model_listing` as the console's table and ``closedloop models`` show it."""
    meta = version["metadata"]
    if version["version"] == champion:
        status = "champion, pinned" if pinned == champion else "champion"
    elif meta.get("status") == "champion":
        status = "replaced"  # it was champion once
    else:
        status = meta.get("status", "")
    lineage = meta.get("lineage") or {}
    gate = meta.get("gate") or {}
    drift = meta.get("drift_psi") or {}
    return {
        "version": version["version"],
        "status": status,
        "published": version["published"],
        "rows": lineage.get("rows_train", ""),
        "metrics": _metrics(meta.get("metrics")),
        "champion_metrics": _metrics(meta.get("champion_metrics")),
        "baseline_metrics": _metrics(meta.get("baseline_metrics")),
        "gate": "; ".join(str(r) for r in gate.get("reasons") or []),
        "parent": lineage.get("parent_version"),
        "drift": f"{max(drift.values()):.3f}" if drift else "",
    }


def _metrics(metrics: dict[str, Any] | None) -> str:
    if not metrics:
        return ""
    return ", ".join(
        f"{k} {v:.4g}" for k, v in sorted(metrics.items()) if isinstance(v, (int, float)) and math.isfinite(v)
    )


def training_overview(
    database_url: str, *, schema: str | None = None, window: float = 3600.0
) -> dict[str, Any]:
    """Training runs (newest first), the trainer's counters, how far behind it is, and per use
    case the decisions per minute and the share with feedback over the last ``window`` seconds."""
    try:
        from closedloop.trainer import ExampleStore
    except ImportError:  # the trainer's extra is not installed
        return {"available": False, "runs": [], "counters": {}, "newest_decision": None, "traffic": {}}
    store = ExampleStore.from_url(database_url, schema=schema)
    try:
        runs = [
            {
                **{k: v for k, v in asdict(run).items() if k not in ("report", "started_at", "finished_at")},
                "started": iso(run.started_at),
                "finished": iso(run.finished_at),
                "seconds": round(run.finished_at - run.started_at, 2),
            }
            for run in reversed(store.runs())
        ]
        newest = store.newest_decision()
        since = (newest or time.time()) - window
        traffic = _per_minute(store.activity(since))
        return {
            "available": True,
            "runs": runs,
            "counters": store.counters(),
            "newest_decision": iso(newest),
            "behind_seconds": None if newest is None else round(time.time() - newest, 1),
            "traffic": traffic,
        }
    finally:
        store.close()


def _per_minute(activity: list[tuple[str, float, bool]]) -> dict[str, list[dict[str, Any]]]:
    by_use_case: dict[str, list[tuple[float, bool]]] = {}
    for use_case, at, reported in activity:
        by_use_case.setdefault(use_case, []).append((at, reported))
    traffic = {}
    for use_case, rows in by_use_case.items():
        minutes = np.floor(np.array([at for at, _ in rows]) / 60).astype(np.int64)
        got_feedback = np.array([r for _, r in rows], dtype=bool)
        buckets = []
        for minute in np.unique(minutes):
            chosen = minutes == minute
            decisions = int(chosen.sum())
            buckets.append(
                {
                    "minute": iso(float(minute) * 60),
                    "decisions": decisions,
                    "feedback_rate": round(float(got_feedback[chosen].mean()), 4) if decisions else None,
                }
            )
        traffic[use_case] = buckets
    return traffic


def tuning_runs(database_url: str, *, schema: str | None = None) -> dict[str, Any]:
    """Every tuning run: status, rounds, trials measured, the recommendation."""
    try:
        from closedloop.tuner import TuningStore
    except ImportError:  # the tuner's extra is not installed (the service image)
        return {"available": False, "runs": []}
    store = TuningStore.from_url(database_url, schema=schema)
    try:
        runs = []
        for record in store.runs():
            trials = store.trials(record.run)
            runs.append(
                {
                    "run": record.run,
                    "use_case": record.use_case,
                    "mode": record.mode,
                    "method": record.method,
                    "status": record.status,
                    "rounds_done": record.rounds_done,
                    "trials": len(trials),
                    "trials_measured": sum(1 for t in trials if t.measurement),
                    "recommendation": record.recommendation,
                }
            )
        return {"available": True, "runs": runs}
    finally:
        store.close()


def tuning_report_page(config: ClosedLoopConfig, run: str, *, schema: str | None = None) -> str | None:
    """A tuning run's report page (the same as ``closedloop tune report``), or None if unknown."""
    from closedloop.tuner import TuningSpace, TuningStore, render_tuning_html, tuning_report

    store = TuningStore.from_url(config.infrastructure.resolved_database_url, schema=schema)
    try:
        record = store.run(run)
        if record is None or record.use_case not in config.use_cases:
            return None
        space = TuningSpace.of(
            record.use_case, config.use_cases[record.use_case], online=record.mode == "online"
        )
        return render_tuning_html(tuning_report(store, run, space))
    finally:
        store.close()
