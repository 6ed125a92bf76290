"""The decision index, on real Redis and in memory: reports are claimed atomically (a replay is
a replay, the first report of an outcome counts), decisions and request ids are committed in one
call, and every fact expires."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from conftest import REDIS_URL

from closedloop.decision_service import DecisionIndex, MemoryDecisionIndex, RedisDecisionIndex


@pytest.fixture(params=["redis", "memory"])
def index(request: pytest.FixtureRequest, redis_prefix: str) -> Iterator[DecisionIndex]:
    if request.param == "redis":
        yield RedisDecisionIndex.from_url(REDIS_URL, prefix=redis_prefix)
    else:
        yield MemoryDecisionIndex(prefix=redis_prefix)


def test_a_report_is_claimed_once_and_the_first_report_of_an_outcome_counts(index: DecisionIndex) -> None:
    keys = index.keys
    first = (keys.feedback_seen("d1", "f1"), [keys.outcome_reported("d1", "click")])
    both = (keys.feedback_seen("d1", "f2"), [keys.outcome_reported("d1", o) for o in ("click", "revenue")])
    claims = index.claim_reports([first, first, both], [60.0] * 3)
    assert [(c.fresh_id, c.fresh_outcomes) for c in claims] == [
        (True, [True]),
        (False, [False]),  # the same report again: a replay, nothing more claimed
        (True, [False, True]),  # click was reported first by f1
    ]
    # A feedback id is scoped to its decision: on another decision it is another report.
    other = index.claim_reports(
        [(keys.feedback_seen("d2", "f1"), [keys.outcome_reported("d2", "click")])], [60.0]
    )
    assert (other[0].fresh_id, other[0].fresh_outcomes) == (True, [True])
    assert index.claim_reports([], []) == []


def test_a_batch_of_a_thousand_reports_is_one_call(index: DecisionIndex) -> None:
    keys = index.keys
    reports = [
        (keys.feedback_seen(f"d{i}", "f"), [keys.outcome_reported(f"d{i}", "click")]) for i in range(1000)
    ]
    assert all(
        c.fresh_id and c.fresh_outcomes == [True] for c in index.claim_reports(reports, [60.0] * len(reports))
    )
    assert not any(c.fresh_id for c in index.claim_reports(reports, [60.0] * len(reports)))


def test_commit_remembers_facts_and_claims_request_ids(index: DecisionIndex) -> None:
    keys = index.keys
    fresh = index.commit([(keys.decision("d1"), "pick")], [(keys.request_seen("r1"), "answer")], ttl=60.0)
    assert fresh == [True]
    again = index.commit([(keys.decision("d2"), "pick")], [(keys.request_seen("r1"), "other")], ttl=60.0)
    assert again == [False]
    assert index.lookup([keys.decision("d1"), keys.decision("d2"), keys.request_seen("r1")]) == [
        "pick",
        "pick",
        "answer",
    ]


@pytest.mark.integration
def test_facts_expire_in_redis(redis_prefix: str) -> None:
    index = RedisDecisionIndex.from_url(REDIS_URL, prefix=redis_prefix)
    keys = index.keys
    index.commit([(keys.decision("d1"), "pick")], [], ttl=60.0)
    index.claim_reports(
        [
            (keys.feedback_seen("d1", "f1"), [keys.outcome_reported("d1", "click")]),
            (keys.feedback_seen("d2", "f1"), [keys.outcome_reported("d2", "click")]),
        ],
        [30.0, 5.0],  # each report's claims expire with its own decision's use case
    )
    client = redis.Redis.from_url(REDIS_URL)
    assert 0 < client.pttl(keys.decision("d1")) <= 60_000
    assert 5_000 < client.pttl(keys.outcome_reported("d1", "click")) <= 30_000
    assert 0 < client.pttl(keys.outcome_reported("d2", "click")) <= 5_000


def test_facts_expire_in_memory() -> None:
    now = [0.0]
    index = MemoryDecisionIndex(clock=lambda: now[0])
    keys = index.keys
    index.commit([(keys.decision("d1"), "pick")], [], ttl=60.0)
    now[0] = 61.0
    assert index.lookup([keys.decision("d1")]) == [None]
