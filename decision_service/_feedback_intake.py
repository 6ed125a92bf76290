"""Feedback intake: check reported outcomes, count each once, log them before answering."""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
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
    OutcomeConfig,
    PermissionDeniedError,
    ServiceUnavailableError,
    Topics,
    UnknownDecisionError,
    UseCaseConfig,
    encode_feedback,
)
from closedloop.eventlog import EventLog

from ._decision_index import DecisionFact, DecisionIndex, ReportClaim, read_decision_fact
from ._faults import crash_point
from ._metrics import EngineMetrics

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Valid:
    feedback_id: str
    outcomes: dict[str, float]
    about: str | None = None
    """The shown candidate the report is about, unless it is the decision's choice (its top)."""
    slot: int | None = None


class FeedbackIntake:
    def __init__(
        self,
        config: ClosedLoopConfig,
        *,
        index: DecisionIndex,
        event_log: EventLog,
        metrics: EngineMetrics,
        fact_ttl: Mapping[str, float],
        clock: Callable[[], datetime],
    ) -> None:
        self._config = config
        self._index = index
        self._event_log = event_log
        self._metrics = metrics
        self._fact_ttl = fact_ttl
        self._orphan_ttl = max(fact_ttl.values())  # an unknown decision's use case is unknown too
        self._orphans = _TokenBucket(config.infrastructure.max_orphans_per_second, clock=time.monotonic)
        self._clock = clock
        self._topic = Topics(config.infrastructure.topic_prefix).feedback

    def log_feedback(
        self, items: Sequence[FeedbackIn], *, use_cases: Collection[str] | None = None
    ) -> list[FeedbackResult]:
        """Check, log, then count a batch of feedback; one result per item, in order.
        ``use_cases``: the only use cases whose decisions the caller may report on (its API
        key's); a report on another's is refused (``forbidden``).

        The events are logged before their claims are made in the index, so a crash at any point
        loses no report that was answered: a retry after a crash before the claims logs the
        report again (the trainer and the evaluator count it once, by feedback id and by decision
        and outcome), and after them it is answered ``replayed``.
        """
        received = self._clock()
        feedback_ids = [item.feedback_id or uuid.uuid4().hex for item in items]
        try:
            facts, seen, reported = self._look_up(items, feedback_ids)
        except ServiceUnavailableError as exc:
            if use_cases is not None:  # whose decisions these are cannot be checked now
                raise
            return self._log_unverified(items, feedback_ids, received, exc)
        checks = [
            _forbidden(item, fact, use_cases) or self._check(item, fact, feedback_id)
            for item, fact, feedback_id in zip(items, facts, feedback_ids, strict=True)
        ]
        use_cases_of = [fact.use_case if fact else None for fact in facts]
        reported_flags = [
            flags[check.about is not None] if isinstance(check, _Valid) else flags[False]
            for flags, check in zip(reported, checks, strict=True)
        ]
        crash_point("feedback.checked")
        results: list[FeedbackResult | None] = []
        to_log: list[tuple[int, FeedbackIn, _Valid]] = []
        # Reports an earlier item of this batch makes: what it claims, these cannot.
        ids_in_batch: set[tuple[str, str]] = set()
        outcomes_in_batch: set[tuple[str, str, str | None]] = set()
        for position, (item, check) in enumerate(zip(items, checks, strict=True)):
            if not isinstance(check, _Valid):
                refused: FeedbackStatus = (
                    "forbidden" if isinstance(check, PermissionDeniedError) else "invalid"
                )
                results.append(_result(item.feedback_id or "", refused, check))
                continue
            new = {
                o: v
                for o, v in check.outcomes.items()
                if not reported_flags[position][o]
                and (item.decision_id, o, check.about) not in outcomes_in_batch
            }
            if seen[position] or (item.decision_id, check.feedback_id) in ids_in_batch:
                results.append(_result(check.feedback_id, "replayed"))
            elif not new:
                results.append(_duplicate(item, check.feedback_id, list(check.outcomes)))
            elif use_cases_of[position] is None and not self._orphans.take():
                self._metrics.orphans_dropped.inc()
                results.append(
                    _result(check.feedback_id, "orphan", _dropped_orphan(item, self._orphans.rate))
                )
            else:
                results.append(None)  # decided by the claims below
                to_log.append((position, item, _Valid(check.feedback_id, new, check.about, check.slot)))
                ids_in_batch.add((item.decision_id, check.feedback_id))
                outcomes_in_batch.update((item.decision_id, o, check.about) for o in new)
        events = [_event(item, use_cases_of[position], check, received) for position, item, check in to_log]
        if events:
            self._event_log.append(self._topic, events)
        crash_point("feedback.logged")
        claims = self._index.claim_reports(
            [
                (
                    self._index.keys.feedback_seen(item.decision_id, check.feedback_id),
                    [
                        self._index.keys.outcome_reported(item.decision_id, o, check.about)
                        for o in check.outcomes
                    ],
                )
                for _, item, check in to_log
            ],
            [self._fact_ttl.get(use_cases_of[position] or "", self._orphan_ttl) for position, _, _ in to_log],
        )
        crash_point("feedback.claimed")
        for (position, item, check), claim in zip(to_log, claims, strict=True):
            results[position] = _claimed_result(item, use_cases_of[position], check, claim)
        final = [result for result in results if result is not None]
        for status, count in Counter(result.status for result in final).items():
            self._metrics.feedback.labels(status).inc(count)
        return final

    def _log_unverified(
        self,
        items: Sequence[FeedbackIn],
        feedback_ids: list[str],
        received: datetime,
        cause: ServiceUnavailableError,
    ) -> list[FeedbackResult]:
        """The index is unreachable: log what passes the checks that need no index (finite values,
        plausible times), unclaimed; the joins count each report once, by decision id."""
        checks = [
            self._check(item, None, feedback_id)
            for item, feedback_id in zip(items, feedback_ids, strict=True)
        ]
        valid = [
            (item, check) for item, check in zip(items, checks, strict=True) if isinstance(check, _Valid)
        ]
        events = [_event(item, None, check, received) for item, check in valid]
        if events:
            self._event_log.append(self._topic, events)
        self._metrics.index_unavailable.labels("feedback").inc(len(events))
        logger.warning("%d reports logged unverified: %s", len(events), cause.message)
        results = [
            _result(check.feedback_id, "unverified")
            if isinstance(check, _Valid)
            else _result(item.feedback_id or "", "invalid", check)
            for item, check in zip(items, checks, strict=True)
        ]
        for status, count in Counter(result.status for result in results).items():
            self._metrics.feedback.labels(status).inc(count)
        return results

    def _look_up(
        self, items: Sequence[FeedbackIn], feedback_ids: list[str]
    ) -> tuple[list[DecisionFact | None], list[bool], list[dict[bool, dict[str, bool]]]]:
        """In one round trip: each item's decision (None if unknown), whether its feedback id was
        claimed already, and which of its outcomes were reported: for the decision's choice
        (``False``) and, for an item naming a candidate, for that candidate (``True``); which of
        the two the report is about is known only from the decision's shown candidates."""
        keys = self._index.keys
        outcome_keys = [
            [
                keys.outcome_reported(i.decision_id, o, candidate)
                for candidate in ((None,) if i.candidate_id is None else (None, i.candidate_id))
                for o in i.outcomes
            ]
            for i in items
        ]
        values = self._index.lookup(
            [keys.decision(item.decision_id) for item in items]
            + [
                keys.feedback_seen(item.decision_id, fid)
                for item, fid in zip(items, feedback_ids, strict=True)
            ]
            + [key for per_item in outcome_keys for key in per_item]
        )
        count = len(items)
        facts = [read_decision_fact(v) if v is not None else None for v in values[:count]]
        seen = [v is not None for v in values[count : 2 * count]]
        flags = iter(values[2 * count :])
        reported = []
        for item in items:
            of_choice = {o: next(flags) is not None for o in item.outcomes}
            of_candidate = (
                {o: next(flags) is not None for o in item.outcomes} if item.candidate_id else of_choice
            )
            reported.append({False: of_choice, True: of_candidate})
        return facts, seen, reported

    def _check(
        self, item: FeedbackIn, fact: DecisionFact | None, feedback_id: str
    ) -> _Valid | ClosedLoopError:
        use_case_name = fact.use_case if fact else None
        use_case = self._config.use_cases.get(use_case_name) if use_case_name else None
        early = _before_its_decision(item, fact.decided_at if fact else None)
        if early is not None:
            return early
        about = _candidate_about(item, fact, use_case)
        if isinstance(about, ClosedLoopError):
            return about
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
            out_of_range = _out_of_range(field, raw, value, declared)
            if out_of_range is not None:
                return out_of_range
            outcomes[name] = value
        return _Valid(feedback_id, outcomes, *about)


def _forbidden(
    item: FeedbackIn, fact: DecisionFact | None, use_cases: Collection[str] | None
) -> PermissionDeniedError | None:
    if use_cases is None or fact is None or fact.use_case in use_cases:
        return None
    return PermissionDeniedError(
        f"Decision {item.decision_id} is of use case {fact.use_case!r}, which this API key may not "
        "report on.",
        field="decision_id",
        value=item.decision_id,
        expected=f"a decision of {sorted(use_cases)}",
        hint="Report with a key of that use case (closedloop keys create NAME --scope decide --use-case U).",
    )


class _TokenBucket:
    """``rate`` tokens a second, up to ten seconds' worth saved: what an orphan flood may spend."""

    def __init__(self, rate: float, *, clock: Callable[[], float]) -> None:
        self.rate = rate
        self._capacity = rate * 10
        self._tokens = self._capacity
        self._clock = clock
        self._at = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self._capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


def _candidate_about(
    item: FeedbackIn, fact: DecisionFact | None, use_case: UseCaseConfig | None
) -> tuple[str | None, int | None] | ClosedLoopError:
    """The candidate a report is about unless it is the decision's choice, and its slot; an
    error for a candidate the decision did not show (nothing unshown is learned from)."""
    candidate = item.candidate_id
    if candidate is None:
        return None, None
    if use_case is not None and use_case.decision == "binary":
        return InvalidRequestError(
            f"candidate_id {candidate!r} was sent for a binary decision, which has no candidates.",
            field="candidate_id",
            value=candidate,
            expected="no candidate_id for a yes/no decision",
        )
    shown = fact.shown if fact else None
    if shown is None:  # an orphan report, or a fact of an earlier version: the trainer checks
        return candidate, None
    if candidate not in shown:
        kind = "shown slots" if use_case is not None and use_case.decision == "rank" else "choice"
        return InvalidRequestError(
            f"candidate_id {candidate!r} was not shown by decision {item.decision_id} "
            f"(its {kind}: {list(shown)[:20]}).",
            field="candidate_id",
            value=candidate,
            expected=f"one of {list(shown)[:20]}",
            hint="A ranking shows its top slot unless decided with slots=N: then its first N."
            if kind == "shown slots"
            else None,
        )
    slot = shown.index(candidate)
    return (None if slot == 0 else candidate), slot


CLOCK_SKEW_SECONDS = 60.0
"""How far before its decision a report's timestamp may be (the product's clock against ours)."""


def _before_its_decision(item: FeedbackIn, decided_at: float | None) -> ClosedLoopError | None:
    if item.timestamp is None or decided_at is None:
        return None
    stamp = item.timestamp if item.timestamp.tzinfo else item.timestamp.replace(tzinfo=UTC)
    if stamp.timestamp() >= decided_at - CLOCK_SKEW_SECONDS:
        return None
    made = datetime.fromtimestamp(decided_at, UTC).isoformat()
    return InvalidRequestError(
        f"timestamp {stamp.isoformat()} is before the decision was made ({made}).",
        field="timestamp",
        value=stamp.isoformat(),
        expected=f"a time at or after {made}",
        hint="Send when the outcome happened (or leave timestamp out: the time it is received).",
    )


def _out_of_range(
    field: str, raw: object, value: float, declared: OutcomeConfig | None
) -> ClosedLoopError | None:
    if declared is None:
        return None
    low, high = declared.min, declared.max
    if (low is None or value >= low) and (high is None or value <= high):
        return None
    bounds = " and ".join(
        part
        for part in (
            f"at least {low}" if low is not None else "",
            f"at most {high}" if high is not None else "",
        )
        if part
    )
    return InvalidRequestError(
        f"{field} must be {bounds}, got {raw!r}.",
        field=field,
        value=raw,
        expected=bounds,
        hint="The outcome's min and max are declared in closedloop.yaml.",
    )


def _event(item: FeedbackIn, use_case: str | None, check: _Valid, received: datetime) -> tuple[str, bytes]:
    timestamp = item.timestamp or received
    if timestamp.tzinfo is None:
        timestamp = timestamp.replace(tzinfo=UTC)
    event = FeedbackEvent(
        event_id=check.feedback_id,
        decision_id=item.decision_id,
        use_case=use_case,
        outcomes=check.outcomes,
        timestamp=timestamp,
        received_at=received,
        orphan=use_case is None,
        candidate_id=item.candidate_id,
        slot=check.slot,
    )
    return item.decision_id, encode_feedback(event)


def _claimed_result(
    item: FeedbackIn, use_case: str | None, check: _Valid, claim: ReportClaim
) -> FeedbackResult:
    if not claim.fresh_id:  # a retry that raced its original
        return _result(check.feedback_id, "replayed")
    if not any(claim.fresh_outcomes):  # another report of these outcomes came first
        return _duplicate(item, check.feedback_id, list(check.outcomes))
    status: FeedbackStatus = "orphan" if use_case is None else "accepted"
    return _result(check.feedback_id, status, _orphan_error(item, use_case))


def _duplicate(item: FeedbackIn, feedback_id: str, outcomes: list[str]) -> FeedbackResult:
    about = f" for candidate {item.candidate_id!r}" if item.candidate_id else ""
    error = DuplicateFeedbackError(
        f"Decision {item.decision_id} already has {', '.join(outcomes)} reported{about}; "
        "the first report counts.",
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


def _dropped_orphan(item: FeedbackIn, rate: float) -> ClosedLoopError:
    return UnknownDecisionError(
        f"No decision {item.decision_id!r} is known, and more than {rate:g} such reports a second "
        "came in: this one was not kept.",
        field="decision_id",
        value=item.decision_id,
        expected="a decision_id returned by decide() within its outcomes' window",
        hint="Reports for unknown decisions are capped (infrastructure.max_orphans_per_second).",
    )


def _result(feedback_id: str, status: FeedbackStatus, error: ClosedLoopError | None = None) -> FeedbackResult:
    return FeedbackResult(
        feedback_id=feedback_id, status=status, error=error.to_payload()["error"] if error else None
    )
