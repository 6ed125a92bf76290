"""Deferred activation, end to end on the real service (`closedloop serve`, real Redis, the event
log on disk): a decision made with ``activate=False`` counts only once activated or reported; a
decision whose answer the SDK gave up waiting for is told abandoned and never counts. The trainer
and the evaluator read what was logged."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from conftest import config_file, logged_events, serve_in_subprocess

from closedloop.contracts import ClosedLoopConfig, decode_decision, decode_feedback
from closedloop.evaluation._hashing import id_hash
from closedloop.evaluation._logged import Gatherer
from closedloop.sdk import AsyncClient, Client, UnknownDecisionError
from closedloop.trainer import open_trainer

pytestmark = pytest.mark.integration

CANDIDATES = ["a", "b", "c"]


def _later() -> float:
    return (datetime.now(UTC) + timedelta(hours=3)).timestamp()


def _trainer_labels(config: ClosedLoopConfig) -> tuple[dict[str, float], dict[str, int]]:
    """decision id -> its click label, once every window has closed; and the trainer's counters."""
    later = _later()
    trainer = open_trainer(config, clock=lambda: later)
    trainer.run_once(timeout=0)
    labels = {
        r["decision_id"]: r["value"] for r in trainer.store.labels_of("pick") if r["outcome"] == "click"
    }
    counters = trainer.store.counters()
    trainer.close()
    return labels, counters


def _evaluated(config: ClosedLoopConfig) -> tuple[set[int], int, int]:
    """The decisions the evaluator counts (hashed), and how many it left out as inactive, abandoned."""
    gatherer = Gatherer("pick", config.use_cases["pick"], None)
    gatherer.add_decisions(logged_events(config, "decisions"))
    gatherer.add_feedback(logged_events(config, "feedback"))
    data = gatherer.finish(as_of=_later())
    return set(data.decision.tolist()), data.inactive, data.abandoned


def test_an_inactive_decision_counts_once_activated_or_reported(tmp_path: Path, redis_prefix: str) -> None:
    config, path = config_file(tmp_path, redis_prefix)
    with serve_in_subprocess(path) as (url, _), Client(url, timeout=5) as client:
        shown = client.decide("pick", "u1", candidates=CANDIDATES, activate=False)
        clicked = client.decide("pick", "u2", candidates=CANDIDATES, activate=False)
        never = client.decide("pick", "u3", candidates=CANDIDATES, activate=False)
        ordinary = client.decide("pick", "u4", candidates=CANDIDATES)
        assert (shown.active, never.active, ordinary.active) == (False, False, True)
        client.activate(shown.decision_id)
        client.log_feedback(clicked.decision_id, {"click": 1})  # the first report activates it
        assert client.flush()
        with pytest.raises(UnknownDecisionError) as unknown:
            client.activate("no-such-decision")
        assert unknown.value.field == "decision_id"
        refused = httpx.post(f"{url}/v1/activate", json={"decision_id": ""}, timeout=5)
        assert refused.status_code == 422
        assert refused.json()["error"]["field"] == "decision_id"
        metrics = httpx.get(f"{url}/metrics", timeout=5).text
        assert 'closedloop_inactive_decisions_total{use_case="pick"} 3.0' in metrics
        assert 'closedloop_activations_total{kind="activate"} 1.0' in metrics

    logged = {e.event_id: e for e in map(decode_decision, logged_events(config, "decisions"))}
    assert logged[never.decision_id].active is False
    assert logged[ordinary.decision_id].active is True
    activations = [e for e in map(decode_feedback, logged_events(config, "feedback")) if e.activation]
    assert [(e.decision_id, e.activation, e.use_case) for e in activations] == [
        (shown.decision_id, "activate", "pick")
    ]

    labels, counters = _trainer_labels(config)
    assert labels == {shown.decision_id: 0.0, clicked.decision_id: 1.0, ordinary.decision_id: 0.0}
    assert (counters["decisions_inactive"], counters["decisions_activated"]) == (3, 2)
    counted, inactive, abandoned = _evaluated(config)
    assert counted == {id_hash(d.decision_id) for d in (shown, clicked, ordinary)}
    assert (inactive, abandoned) == (1, 0)


def test_a_decide_the_sdk_stopped_waiting_for_is_abandoned(tmp_path: Path, redis_prefix: str) -> None:
    """The service stalls after logging the decision (as an overloaded host would); the SDK times
    out, answers with its fallback and tells the service, later, that the request was abandoned."""
    config, path = config_file(tmp_path, redis_prefix)
    faults = {"CLOSEDLOOP_PAUSE_AT": "decide.logged=1.5"}
    with (
        serve_in_subprocess(path, faults=faults) as (url, _),
        Client(url, timeout=0.3, retries=0, flush_interval=0.2) as client,
    ):
        decision = client.decide("pick", "u1", candidates=CANDIDATES)
        assert decision.fallback
        assert client.stats().abandoned_waiting == 1
        deadline = time.monotonic() + 30
        while client.stats().abandoned_told == 0 and time.monotonic() < deadline:
            time.sleep(0.1)  # the service stalls again on the abandonment's first attempts
        assert client.stats().abandoned_told == 1
        assert client.stats().abandoned_waiting == 0

    decisions = [decode_decision(r) for r in logged_events(config, "decisions")]
    assert len(decisions) == 1
    assert decisions[0].active
    abandonments = [e for e in map(decode_feedback, logged_events(config, "feedback")) if e.activation]
    # At least once: attempts that timed out in the stall were logged too; applying one twice is a no-op.
    assert {(e.decision_id, e.activation) for e in abandonments} == {(decisions[0].event_id, "abandon")}
    labels, counters = _trainer_labels(config)
    assert labels == {}
    assert counters["decisions_abandoned"] == 1
    assert _evaluated(config) == (set(), 0, 1)


def test_the_async_client_activates_and_tells_abandonments_too(tmp_path: Path, redis_prefix: str) -> None:
    config, path = config_file(tmp_path, redis_prefix)

    async def run(url: str) -> tuple[str, int]:
        async with AsyncClient(url, timeout=5) as patient, AsyncClient(url, timeout=0.3, retries=0) as hasty:
            decision = await patient.decide("pick", "u1", candidates=CANDIDATES, activate=False)
            await patient.activate(decision.decision_id)
            fallback = await hasty.decide("pick", "u2", candidates=CANDIDATES)
            await hasty.activate(fallback.decision_id)  # a fallback decision: nothing to activate
            deadline = time.monotonic() + 30
            while hasty.stats().abandoned_told == 0 and time.monotonic() < deadline:
                await hasty.flush()
                await asyncio.sleep(0.1)
            return decision.decision_id, hasty.stats().abandoned_told

    with serve_in_subprocess(path, faults={"CLOSEDLOOP_PAUSE_AT": "decide.logged=1.0"}) as (url, _):
        decision_id, told = asyncio.run(run(url))
        metrics = httpx.get(f"{url}/metrics", timeout=5).text
        assert 'closedloop_activations_total{kind="abandon"}' in metrics
        unknown = httpx.post(
            f"{url}/v1/abandon",
            json={"items": [{"use_case": "nope", "unit_id": "u", "request_id": "r"}]},
            timeout=5,
        )
    assert told == 1
    assert unknown.status_code == 404
    assert unknown.json()["error"]["field"] == "items[0].use_case"
    kinds = {e.activation or "" for e in map(decode_feedback, logged_events(config, "feedback"))}
    assert kinds == {"abandon", "activate"}  # at least once each (a timed-out attempt logs too)
    labels, _ = _trainer_labels(config)
    assert set(labels) == {decision_id}  # the activated one; the abandoned one never counts
