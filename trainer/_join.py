"""Joining outcomes to decisions: logged events in, training examples and labels out.

A decision becomes an example: the features of the action it logged, exactly as the policy saw
them. A feedback event labels the example's outcome if it happened within the outcome's window
(the first report counts); feedback read before its decision waits in ``cl_pending_reports``
until the decision arrives. Windows that end without feedback get the outcome's default
(`ExampleStore.close_windows`).

Only decisions that count are labelled (the rule is `FeedbackEvent`'s): a decision logged
inactive waits, unlabelled, for an activation event or its first report; an abandoned one is
never labelled. Activations read before their decision wait in ``cl_pending_activations``.
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
    pending_activations,
    pending_feedback,
)

logger = logging.getLogger(__name__)
Event = TypeVar("Event", DecisionEvent, FeedbackEvent)
Activations = dict[str, dict[str, float]]
"""decision id -> activation kind ("activate", "abandon") -> when it was logged."""


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
        counts["decisions_inactive"] += sum(row["status"] == "inactive" for row in rows)
        arrived = [row["decision_id"] for row in rows]
        # Activations and early feedback from earlier batches whose decision arrived now, before
        # this batch's: the first report in log order is the one that counts.
        activations = ExampleStore.take_pending_activations(connection, arrived)
        reports = [
            _Feedback(p["feedback_id"], p["decision_id"], p["outcome"], p["value"], p["happened_at"])
            for p in ExampleStore.take_pending(connection, arrived)
        ]
        for raw in feedback:
            report = _decoded(decode_feedback, raw, counts)
            if report is None:
                continue
            if report.activation is not None:
                kinds = activations.setdefault(report.decision_id, {})
                kinds.setdefault(report.activation, report.timestamp.timestamp())
            else:
                reports.extend(self._feedback(report, counts))
        self._activate(connection, activations, counts)
        self._label(connection, reports, counts)
        return counts

    @staticmethod
    def _activate(connection: Connection, kinds: Activations, counts: Counter[str]) -> None:
        """Apply activations and abandonments; those of decisions not read yet wait for them."""
        if not kinds:
            return
        known = ExampleStore.known_decisions(connection, kinds)
        abandoned = [d for d, k in kinds.items() if d in known and "abandon" in k]
        activated = [
            d for d, k in kinds.items() if d in known and "abandon" not in k and known[d].status == "inactive"
        ]
        ExampleStore.abandon(connection, abandoned)
        ExampleStore.activate(connection, activated)
        counts["decisions_abandoned"] += sum(known[d].status != "abandoned" for d in abandoned)
        counts["decisions_activated"] += len(activated)
        waiting = [
            {"decision_id": d, "kind": kind, "happened_at": at}
            for d, k in kinds.items()
            if d not in known
            for kind, at in k.items()
        ]
        insert_ignoring_duplicates(connection, pending_activations, waiting)
        counts["activations_waiting"] += len(waiting)

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
            "status": "active" if event.active else "inactive",
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
        activated: set[str] = set()
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
            use_case, decided_at = decision.use_case, decision.decided_at
            if decision.status == "abandoned":
                counts["feedback_for_abandoned"] += 1
                continue
            if decision.status == "inactive":  # its first report activates it, whatever it says
                activated.add(report.decision_id)
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
        ExampleStore.activate(connection, sorted(activated))
        counts["decisions_activated"] += len(activated)
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
