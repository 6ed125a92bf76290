"""Feedback intake: check reported outcomes, count each once, log them before answering."""

from __future__ import annotations

import math
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from closedloop.contracts import (
    ClosedLoopConfig,
    ClosedLoopError,
    DuplicateFeedbackError,
    FeedbackEvent,
    FeedbackIn,
    FeedbackResult,
    FeedbackStatus,
    InvalidRequestError,
    Topics,
    UnknownDecisionError,
    encode_feedback,
)
from closedloop.eventlog import EventLog

from ._decision_index import DecisionIndex
from ._metrics import EngineMetrics


@dataclass(frozen=True, slots=True)
class _Valid:
    feedback_id: str
    outcomes: dict[str, float]


class FeedbackIntake:
    def __init__(
        self,
        config: ClosedLoopConfig,
        *,
        index: DecisionIndex,
        event_log: EventLog,
        metrics: EngineMetrics,
        fact_ttl: float,
        clock: Callable[[], datetime],
    ) -> None:
        self._config = config
        self._index = index
        self._event_log = event_log
        self._metrics = metrics
        self._fact_ttl = fact_ttl
        self._clock = clock
        self._topic = Topics(config.infrastructure.topic_prefix).feedback

    def log_feedback(self, items: Sequence[FeedbackIn]) -> list[FeedbackResult]:
        """Check, de-duplicate and log a batch of feedback; one result per item, in order."""
        received = self._clock()
        keys = self._index.keys
        use_cases = self._index.lookup([keys.decision(item.decision_id) for item in items])
        checks = [self._check(item, name) for item, name in zip(items, use_cases, strict=True)]
        claim_keys: list[str] = []
        for item, check in zip(items, checks, strict=True):
            if isinstance(check, _Valid):
                claim_keys.append(keys.feedback_seen(check.feedback_id))
                claim_keys.extend(keys.outcome_reported(item.decision_id, o) for o in check.outcomes)
        claimed = iter(self._index.claim(claim_keys, self._fact_ttl))
        results: list[FeedbackResult] = []
        events: list[tuple[str, bytes]] = []
        to_release: list[str] = []
        for item, name, check in zip(items, use_cases, checks, strict=True):
            if not isinstance(check, _Valid):
                results.append(_result(item.feedback_id or "", "invalid", check))
                continue
            fresh_id = next(claimed)
            fresh = {o: next(claimed) for o in check.outcomes}
            if not fresh_id:
                to_release.extend(keys.outcome_reported(item.decision_id, o) for o, ok in fresh.items() if ok)
                results.append(_result(check.feedback_id, "replayed"))
                continue
            new_outcomes = {o: v for o, v in check.outcomes.items() if fresh[o]}
            if not new_outcomes:
                results.append(_duplicate(item, check.feedback_id, list(check.outcomes)))
                continue
            events.append(_event(item, name, check.feedback_id, new_outcomes, received))
            status: FeedbackStatus = "orphan" if name is None else "accepted"
            results.append(_result(check.feedback_id, status, _orphan_error(item, name)))
        try:
            if events:
                self._event_log.append(self._topic, events)
        except BaseException:
            self._index.release(claim_keys)
            raise
        if to_release:
            self._index.release(to_release)
        for status, count in Counter(result.status for result in results).items():
            self._metrics.feedback.labels(status).inc(count)
        return results

    def _check(self, item: FeedbackIn, use_case_name: str | None) -> _Valid | ClosedLoopError:
        use_case = self._config.use_cases.get(use_case_name) if use_case_name else None
        outcomes: dict[str, float] = {}
        for name, raw in item.outcomes.items():
            field = f"outcomes.{name}"
            declared = use_case.outcomes.get(name) if use_case else None
            if use_case is not None and declared is None:
                return InvalidRequestError(
                    f"{name!r} is not an outcome of {use_case_name}.",
                    field=field,
                    value=raw,
                    expected=f"one of {sorted(use_case.outcomes)}",
                )
            value = float(raw)
            if not math.isfinite(value):
                return InvalidRequestError(
                    f"{field} must be a finite number, got {raw!r}.",
                    field=field,
                    value=raw,
                    expected="a finite number",
                )
            if declared is not None and declared.type == "binary" and value not in (0.0, 1.0):
                return InvalidRequestError(
                    f"{field} is a binary outcome and must be 0 or 1 (or true/false), got {raw!r}.",
                    field=field,
                    value=raw,
                    expected="0, 1, true or false",
                )
            outcomes[name] = value
        return _Valid(item.feedback_id or uuid.uuid4().hex, outcomes)


def _event(
    item: FeedbackIn, use_case: str | None, feedback_id: str, outcomes: dict[str, float], received: datetime
) -> tuple[str, bytes]:
    timestamp = item.timestamp or received
    if timestamp.tzinfo is None:
        timestamp = timestamp.replace(tzinfo=UTC)
    event = FeedbackEvent(
        event_id=feedback_id,
        decision_id=item.decision_id,
        use_case=use_case,
        outcomes=outcomes,
        timestamp=timestamp,
        received_at=received,
        orphan=use_case is None,
    )
    return item.decision_id, encode_feedback(event)


def _duplicate(item: FeedbackIn, feedback_id: str, outcomes: list[str]) -> FeedbackResult:
    error = DuplicateFeedbackError(
        f"Decision {item.decision_id} already has {', '.join(outcomes)} reported; the first report counts.",
        field=f"outcomes.{outcomes[0]}",
        value=item.outcomes[outcomes[0]],
        expected="one report per outcome and decision",
    )
    return _result(feedback_id, "duplicate", error)


def _orphan_error(item: FeedbackIn, use_case: str | None) -> ClosedLoopError | None:
    if use_case is not None:
        return None
    return UnknownDecisionError(
        f"No decision {item.decision_id!r} is known (or its attribution window has closed); "
        "the feedback was kept as orphan.",
        field="decision_id",
        value=item.decision_id,
        expected="a decision_id returned by decide() within its outcomes' window",
    )


def _result(feedback_id: str, status: FeedbackStatus, error: ClosedLoopError | None = None) -> FeedbackResult:
    return FeedbackResult(
        feedback_id=feedback_id, status=status, error=error.to_payload()["error"] if error else None
    )
