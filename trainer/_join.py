"""Joining outcomes to decisions: logged events in, training examples and labels out.

A decision becomes an example: the features of the action it logged, exactly as the policy saw
them. A feedback event labels the example's outcome if it happened within the outcome's window
(the first report counts); feedback read before its decision waits in ``cl_pending_feedback``
until the decision arrives. Windows that end without feedback get the outcome's default
(`ExampleStore.close_windows`).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from sqlalchemy.engine import Connection

from closedloop.contracts import (
    Attribution,
    ClosedLoopConfig,
    DecisionEvent,
    EventFormatError,
    FeedbackEvent,
    decode_decision,
    decode_feedback,
)
from closedloop.policy import FeatureEncoder

from ._store import (
    ExampleStore,
    examples,
    insert_ignoring_duplicates,
    labels,
    pending_feedback,
)

logger = logging.getLogger(__name__)
Event = TypeVar("Event", DecisionEvent, FeedbackEvent)


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
        self._attribution = {name: Attribution.of(use_case) for name, use_case in config.use_cases.items()}

    def apply(self, connection: Connection, decisions: list[bytes], feedback: list[bytes]) -> Counter[str]:
        """Store a batch of events; returns counts of what happened to them."""
        counts: Counter[str] = Counter()
        rows = []
        for raw in decisions:  # one decoded event alive at a time: a batch of them taxes the GC
            event = _decoded(decode_decision, raw, counts)
            row = self._example(event, counts) if event is not None else None
            if row is not None:
                rows.append(row)
        insert_ignoring_duplicates(connection, examples, rows)
        counts["decisions"] += len(rows)
        # Early feedback from earlier batches whose decision arrived now, before this batch's:
        # the first report in log order is the one that counts.
        reports = [
            _Feedback(p["feedback_id"], p["decision_id"], p["outcome"], p["value"], p["happened_at"])
            for p in ExampleStore.take_pending(connection, [row["decision_id"] for row in rows])
        ]
        for raw in feedback:
            report = _decoded(decode_feedback, raw, counts)
            if report is not None:
                reports.extend(self._feedback(report, counts))
        self._label(connection, reports, counts)
        return counts

    def _example(self, event: DecisionEvent, counts: Counter[str]) -> dict[str, Any] | None:
        encoder = self._encoders.get(event.use_case)
        if encoder is None:
            counts["decisions_of_unknown_use_case"] += 1
            return None
        chosen = event.logged_candidate()
        features = encoder.logged_example(event.context, chosen.features if chosen else {}, event.choice)
        return {
            "decision_id": event.event_id,
            "use_case": event.use_case,
            "decided_at": event.timestamp.timestamp(),
            "features": orjson.dumps(features).decode(),
            "choice": event.choice,
            "propensity": event.propensity,
            "policy": event.policy,
            "arm": event.arm,
            "model_versions": orjson.dumps(event.model_versions).decode(),
            "closed": False,
        }

    @staticmethod
    def _feedback(event: FeedbackEvent, counts: Counter[str]) -> list[_Feedback]:
        counts["feedback_events"] += 1
        happened_at = event.timestamp.timestamp()
        return [
            _Feedback(event.event_id, event.decision_id, outcome, float(value), happened_at)
            for outcome, value in event.outcomes.items()
        ]

    def _label(self, connection: Connection, reports: list[_Feedback], counts: Counter[str]) -> None:
        if not reports:
            return
        ids = [r.decision_id for r in reports]
        known = ExampleStore.known_decisions(connection, ids)
        labelled = ExampleStore.existing_labels(connection, [i for i in ids if i in known])
        # Early reports wait for their decision, every distinct one (which of them counts depends
        # on the decision's time); the same report redelivered is a duplicate.
        already_waiting = ExampleStore.pending_keys(connection, [i for i in ids if i not in known])
        new_labels: list[dict[str, Any]] = []
        waiting: list[dict[str, Any]] = []
        for report in reports:
            decision = known.get(report.decision_id)
            if decision is None:
                waiting_key = (report.decision_id, report.outcome, report.feedback_id)
                if waiting_key in already_waiting:
                    counts["feedback_duplicate"] += 1
                    continue
                already_waiting.add(waiting_key)
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
            attribution = self._attribution.get(use_case)
            window = attribution.windows.get(report.outcome) if attribution else None
            key = (report.decision_id, report.outcome)
            if window is None:
                counts["feedback_unknown_outcome"] += 1
            elif not Attribution.counts(report.happened_at - decided_at, window):
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


def _decoded(decode: Callable[[bytes], Event], raw: bytes, counts: Counter[str]) -> Event | None:
    """The decoded event, or None (counted as ``unreadable_events``) for a record of another shape."""
    try:
        return decode(raw)
    except EventFormatError as exc:
        counts["unreadable_events"] += 1
        logger.error("skipping a logged record: %s", exc)
        return None
