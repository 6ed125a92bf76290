"""Feedback about one candidate of a ranking: checked against the shown slots, counted once per
candidate, logged with the slot it was shown in (in-process, on embedded stores)."""

from __future__ import annotations

import pytest
from conftest import logged_events

from closedloop.contracts import (
    ClosedLoopConfig,
    DecideRequest,
    Decision,
    FeedbackIn,
    FeedbackResult,
    decode_feedback,
)
from closedloop.decision_service import DecisionEngine, open_engine


def _ranking(engine: DecisionEngine, *, slots: int | None) -> Decision:
    request = {
        "use_case": "feed",
        "unit_id": "u1",
        "candidates": [{"id": f"c{i}", "features": {"price": float(i), "topic": "a"}} for i in range(6)],
        "slots": slots,
    }
    return engine.decide(DecideRequest.model_validate(request))


def _report(
    engine: DecisionEngine, decision_id: str, candidate: str | None, **outcomes: float
) -> FeedbackResult:
    item = FeedbackIn.model_validate(
        {"decision_id": decision_id, "outcomes": outcomes, "candidate_id": candidate}
    )
    return engine.log_feedback([item])[0]


@pytest.fixture
def engine(config: ClosedLoopConfig) -> DecisionEngine:
    engine = open_engine(config, seed=3)
    yield engine  # type: ignore[misc]
    engine.close()


def test_each_shown_candidate_gets_its_own_report_logged_with_its_slot(
    config: ClosedLoopConfig, engine: DecisionEngine
) -> None:
    decision = _ranking(engine, slots=3)
    assert decision.ranking is not None
    second, third = decision.ranking[1], decision.ranking[2]
    assert _report(engine, decision.decision_id, second, click=1).status == "accepted"
    assert _report(engine, decision.decision_id, third, click=1).status == "accepted"
    assert _report(engine, decision.decision_id, None, click=0).status == "accepted"  # the top's
    again = _report(engine, decision.decision_id, third, click=0)
    assert again.status == "duplicate"
    assert again.error is not None
    assert repr(third) in str(again.error["message"])
    # naming the top candidate is the same as naming none: already reported
    assert _report(engine, decision.decision_id, decision.ranking[0], click=1).status == "duplicate"
    events = [decode_feedback(r) for r in logged_events(config, "feedback")]
    assert [(e.candidate_id, e.slot, e.outcomes) for e in events] == [
        (second, 1, {"click": 1.0}),
        (third, 2, {"click": 1.0}),
        (None, None, {"click": 0.0}),
    ]


def test_a_candidate_that_was_not_shown_is_refused_naming_the_shown_ones(engine: DecisionEngine) -> None:
    decision = _ranking(engine, slots=2)
    assert decision.ranking is not None
    unshown = decision.ranking[4]
    result = _report(engine, decision.decision_id, unshown, click=1)
    assert result.status == "invalid"
    assert result.error is not None
    assert result.error["field"] == "candidate_id"
    assert result.error["value"] == unshown
    assert result.error["expected"] == f"one of {decision.ranking[:2]}"


def test_a_ranking_decided_without_slots_shows_only_its_top(engine: DecisionEngine) -> None:
    decision = _ranking(engine, slots=None)
    assert decision.ranking is not None
    refused = _report(engine, decision.decision_id, decision.ranking[1], click=1)
    assert refused.status == "invalid"
    assert refused.error is not None
    assert "slots=N" in str(refused.error["hint"])
    assert _report(engine, decision.decision_id, decision.ranking[0], click=1).status == "accepted"


def test_a_choice_takes_only_its_chosen_candidate_and_a_binary_decision_none(engine: DecisionEngine) -> None:
    pick = engine.decide(
        DecideRequest.model_validate(
            {"use_case": "pick", "unit_id": "u", "candidates": [{"id": "a"}, {"id": "b"}, {"id": "c"}]}
        )
    )
    other = next(c for c in "abc" if c != pick.choice)
    assert _report(engine, pick.decision_id, other, click=1).status == "invalid"
    assert _report(engine, pick.decision_id, pick.choice, click=1).status == "accepted"
    notify = engine.decide(DecideRequest.model_validate({"use_case": "notify", "unit_id": "u"}))
    result = _report(engine, notify.decision_id, "yes", open=1)
    assert result.status == "invalid"
    assert result.error is not None
    assert result.error["field"] == "candidate_id"
