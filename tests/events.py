"""Decision and feedback events built by hand through the event codec, for trainer tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from closedloop.contracts import (
    ActivationKind,
    DecisionEvent,
    FeedbackEvent,
    LoggedCandidate,
    LoggedSlot,
    encode_decision,
    encode_feedback,
)

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()


def at(seconds_after_t0: float) -> datetime:
    return datetime.fromtimestamp(T0 + seconds_after_t0, UTC)


def decision_event(
    decision_id: str,
    *,
    seconds: float = 0.0,
    use_case: str = "pick",
    candidates: dict[str, dict[str, Any]] | None = None,
    choice: str = "a",
    propensity: float = 0.5,
    active: bool = True,
) -> bytes:
    candidates = candidates or {"a": {"price": 1.0}, "b": {"price": 2.0}}
    event = DecisionEvent(
        event_id=decision_id,
        use_case=use_case,
        unit_id="u1",
        timestamp=at(seconds),
        decision_type="choose",
        context={},
        candidates=[
            LoggedCandidate(id=cid, features=features, predictions={}, value=0.0)
            for cid, features in candidates.items()
        ],
        choice=choice,
        ranking=None,
        propensity=propensity,
        exploration={"strategy": "softmax", "temperature": 0.1},
        model_versions={},
        policy="default",
        experiment=None,
        arm=None,
        active=active,
    )
    return encode_decision(event)


def ranking_event(
    decision_id: str,
    prices: dict[str, float],
    shown: list[tuple[str, float]],
    *,
    seconds: float = 0.0,
    active: bool = True,
) -> bytes:
    """A ``feed`` ranking of candidates priced ``prices``, in that order, whose first slots are
    ``shown``: (candidate, propensity given the slots above), top first."""
    ranking = [c for c, _ in shown] + [c for c in prices if c not in dict(shown)]
    event = DecisionEvent(
        event_id=decision_id,
        use_case="feed",
        unit_id="u1",
        timestamp=at(seconds),
        decision_type="rank",
        context={"country": "de", "hour": 9.0},
        candidates=[
            LoggedCandidate(id=cid, features={"price": price, "topic": "a"}, predictions={}, value=0.0)
            for cid, price in prices.items()
        ],
        choice=ranking[0],
        ranking=ranking,
        propensity=shown[0][1],
        exploration={"strategy": "squarecb"},
        model_versions={},
        policy="default",
        active=active,
        slots=[LoggedSlot(candidate=c, propensity=p) for c, p in shown],
    )
    return encode_decision(event)


def feedback_event(
    feedback_id: str,
    decision_id: str,
    outcomes: dict[str, float],
    *,
    seconds: float,
    use_case: str | None = "pick",
    candidate: str | None = None,
) -> bytes:
    event = FeedbackEvent(
        event_id=feedback_id,
        decision_id=decision_id,
        use_case=use_case,
        outcomes=outcomes,
        timestamp=at(seconds),
        received_at=at(seconds),
        orphan=use_case is None,
        candidate_id=candidate,
    )
    return encode_feedback(event)


def activation_event(
    decision_id: str, kind: ActivationKind, *, seconds: float, use_case: str = "pick"
) -> bytes:
    """What the service logs for ``POST /v1/activate`` or ``/v1/abandon``."""
    event = FeedbackEvent(
        event_id=f"{kind}.{decision_id}",
        decision_id=decision_id,
        use_case=use_case,
        outcomes={},
        timestamp=at(seconds),
        received_at=at(seconds),
        activation=kind,
    )
    return encode_feedback(event)
