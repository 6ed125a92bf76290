"""Joining outcomes to decisions: logged events in, training examples and labels out.

A decision becomes an example: the features of the action it logged, exactly as the policy saw
them. A feedback event labels the example's outcome if it happened within the outcome's window
(the first report counts); feedback read before its decision waits in ``cl_pending_feedback``
until the decision arrives. Windows that end without feedback get the outcome's default
(`ExampleStore.close_windows`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy.engine import Connection

from closedloop.contracts import ClosedLoopConfig
from closedloop.decision_service import FeatureEncoder
from closedloop.trainer._store import (
    ExampleStore,
    examples,
    insert_ignoring_duplicates,
    labels,
    pending_feedback,
)


def _epoch(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


@dataclass(frozen=True)
class _Feedback:
    feedback_id: str
    decision_id: str
    outcome: str
    value: float
    happened_at: float


class Joiner:
    def __init__(self, config: ClosedLoopConfig, encoders: Mapping[str, FeatureEncoder]) -> None:
        self._encoders = encoders
        self._windows = {
            name: {o: outcome.window.total_seconds() for o, outcome in use_case.outcomes.items()}
            for name, use_case in config.use_cases.items()
        }

    def apply(self, connection: Connection, decisions: list[bytes], feedback: list[bytes]) -> Counter[str]:
        """Store a batch of events; returns counts of what happened to them."""
        counts: Counter[str] = Counter()
        rows = [row for row in (self._example(orjson.loads(raw), counts) for raw in decisions) if row]
        insert_ignoring_duplicates(connection, examples, rows)
        counts["decisions"] += len(rows)
        reports = [f for raw in feedback for f in self._feedback(orjson.loads(raw), counts)]
        # Early feedback from earlier batches whose decision arrived now.
        reports.extend(
            _Feedback(p["feedback_id"], p["decision_id"], p["outcome"], p["value"], p["happened_at"])
            for p in ExampleStore.take_pending(connection, [row["decision_id"] for row in rows])
        )
        self._label(connection, reports, counts)
        return counts

    def _example(self, event: dict[str, Any], counts: Counter[str]) -> dict[str, Any] | None:
        use_case = event.get("use_case")
        encoder = self._encoders.get(use_case or "")
        if encoder is None:
            counts["decisions_of_unknown_use_case"] += 1
            return None
        chosen = next((c for c in event["candidates"] if c["id"] == event["choice"]), None)
        features = encoder.logged_example(
            event["context"], chosen["features"] if chosen else {}, event["choice"]
        )
        return {
            "decision_id": event["event_id"],
            "use_case": use_case,
            "decided_at": _epoch(event["timestamp"]),
            "features": orjson.dumps(features).decode(),
            "choice": event["choice"],
            "propensity": event["propensity"],
            "policy": event["policy"],
            "arm": event.get("arm"),
            "model_versions": orjson.dumps(event.get("model_versions") or {}).decode(),
            "closed": False,
        }

    @staticmethod
    def _feedback(event: dict[str, Any], counts: Counter[str]) -> list[_Feedback]:
        counts["feedback_events"] += 1
        happened_at = _epoch(event["timestamp"])
        return [
            _Feedback(event["event_id"], event["decision_id"], outcome, float(value), happened_at)
            for outcome, value in event["outcomes"].items()
        ]

    def _label(self, connection: Connection, reports: list[_Feedback], counts: Counter[str]) -> None:
        if not reports:
            return
        ids = [r.decision_id for r in reports]
        known = ExampleStore.known_decisions(connection, ids)
        labelled = ExampleStore.existing_labels(connection, [i for i in ids if i in known])
        # The first report of an outcome waits; a repeat (redelivered, or a second report) is a
        # duplicate now, as it would be once its decision arrived.
        already_waiting = ExampleStore.pending_keys(connection, [i for i in ids if i not in known])
        new_labels: list[dict[str, Any]] = []
        waiting: list[dict[str, Any]] = []
        for report in reports:
            decision = known.get(report.decision_id)
            if decision is None:
                if (report.decision_id, report.outcome) in already_waiting:
                    counts["feedback_duplicate"] += 1
                    continue
                already_waiting.add((report.decision_id, report.outcome))
                waiting.append(
                    {
                        "decision_id": report.decision_id,
                        "outcome": report.outcome,
                        "value": report.value,
                        "feedback_id": report.feedback_id,
                        "happened_at": report.happened_at,
                    }
                )
                continue
            use_case, decided_at = decision
            window = self._windows.get(use_case, {}).get(report.outcome)
            key = (report.decision_id, report.outcome)
            if window is None:
                counts["feedback_unknown_outcome"] += 1
            elif report.happened_at - decided_at > window:
                counts["feedback_after_window"] += 1
            elif key in labelled:
                counts["feedback_duplicate"] += 1
            else:
                labelled.add(key)
                new_labels.append(
                    {
                        "decision_id": report.decision_id,
                        "outcome": report.outcome,
                        "use_case": use_case,
                        "value": report.value,
                        "source": "feedback",
                        "feedback_id": report.feedback_id,
                        "labelled_at": report.happened_at,
                    }
                )
        insert_ignoring_duplicates(connection, labels, new_labels)
        insert_ignoring_duplicates(connection, pending_feedback, waiting)
        counts["feedback_joined"] += len(new_labels)
        counts["feedback_waiting"] += len(waiting)
