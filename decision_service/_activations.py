"""Activation: a decision made with ``activate=False`` counts once the product says it was shown,
and a decision the SDK gave up waiting for (it used its fallback instead) never counts.

Both are logged as activation events on the feedback topic; the trainer's join and the
evaluator's gatherer apply them by decision id, in whatever order they meet the decision. Neither
needs a claim in the index: applying one twice changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from datetime import datetime

from closedloop.contracts import (
    AbandonedRequest,
    ActivationKind,
    ActivationResult,
    ClosedLoopConfig,
    FeedbackEvent,
    PermissionDeniedError,
    ServiceUnavailableError,
    Topics,
    UnknownDecisionError,
    UnknownUseCaseError,
    encode_feedback,
)
from closedloop.eventlog import EventLog

from ._decision_index import DecisionIndex, read_decision_fact
from ._identity import decision_id_of
from ._metrics import EngineMetrics

logger = logging.getLogger(__name__)


class Activations:
    def __init__(
        self,
        config: ClosedLoopConfig,
        *,
        index: DecisionIndex,
        event_log: EventLog,
        metrics: EngineMetrics,
        clock: Callable[[], datetime],
    ) -> None:
        self._config = config
        self._index = index
        self._event_log = event_log
        self._metrics = metrics
        self._clock = clock
        self._topic = Topics(config.infrastructure.topic_prefix).feedback

    def activate(self, decision_id: str, *, use_cases: Collection[str] | None = None) -> ActivationResult:
        """Log that the decision was shown; 404 for a decision the index does not know.
        ``use_cases``: those whose decisions the caller may activate (its API key's)."""
        try:
            fact = self._index.lookup([self._index.keys.decision(decision_id)])[0]
        except ServiceUnavailableError as exc:
            if use_cases is not None:  # whose decision it is cannot be checked now
                raise
            logger.warning("activation of %s logged unverified: %s", decision_id, exc.message)
            self._log([(decision_id, None)], "activate")
            return ActivationResult(decision_id=decision_id, status="unverified")
        if fact is None:
            raise UnknownDecisionError(
                f"No decision {decision_id!r} is known (or its attribution window has closed).",
                field="decision_id",
                value=decision_id,
                expected="a decision_id returned by decide() within its outcomes' window",
            )
        use_case = read_decision_fact(fact).use_case
        if use_cases is not None and use_case not in use_cases:
            raise PermissionDeniedError(
                f"Decision {decision_id} is of use case {use_case!r}, which this API key may not activate.",
                field="decision_id",
                value=decision_id,
                expected=f"a decision of {sorted(use_cases)}",
            )
        self._log([(decision_id, use_case)], "activate")
        return ActivationResult(decision_id=decision_id, status="activated")

    def abandon(self, items: Sequence[AbandonedRequest]) -> int:
        """Log that these requests' answers were never used; returns how many were logged. A
        request the service never received names a decision that never comes: harmless."""
        for position, item in enumerate(items):
            if item.use_case not in self._config.use_cases:
                raise UnknownUseCaseError(
                    f"Unknown use case {item.use_case!r}.",
                    field=f"items[{position}].use_case",
                    value=item.use_case,
                    expected=f"one of {sorted(self._config.use_cases)}",
                )
        self._log(
            [(decision_id_of(i.use_case, i.unit_id, i.request_id), i.use_case) for i in items], "abandon"
        )
        return len(items)

    def abandon_logged(self, decision_id: str, use_case: str) -> None:
        """A decision that was logged and then answered with an error: it must not count."""
        self._log([(decision_id, use_case)], "abandon")

    def _log(self, decisions: list[tuple[str, str | None]], kind: ActivationKind) -> None:
        now = self._clock()
        events = [
            (
                decision_id,
                encode_feedback(
                    FeedbackEvent(
                        event_id=f"{kind}.{decision_id}",
                        decision_id=decision_id,
                        use_case=use_case,
                        outcomes={},
                        timestamp=now,
                        received_at=now,
                        activation=kind,
                    )
                ),
            )
            for decision_id, use_case in decisions
        ]
        self._event_log.append(self._topic, events)
        self._metrics.activations.labels(kind).inc(len(events))
