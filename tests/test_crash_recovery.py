"""Nothing acknowledged is lost, and nothing is counted twice, whatever instant the service dies.

The real service (`closedloop serve`, real Redis, the event log on disk) is killed with SIGKILL at
each step of decide and of feedback intake (`CLOSEDLOOP_CRASH_AT`, see decision_service/_faults.py),
restarted, and sent the same request again, as the SDK retries. Then the log is read and the
trainer and the evaluator count it: one decision, with the answer the client got; one label, the
first report's.
"""

from __future__ import annotations

import signal
import subprocess
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from conftest import config_file, logged_events, serve_in_subprocess

from closedloop.contracts import ClosedLoopConfig, decode_decision, decode_feedback
from closedloop.evaluation._logged import Gatherer
from closedloop.trainer import open_trainer

pytestmark = pytest.mark.integration

DECIDE = {
    "use_case": "pick",
    "unit_id": "u1",
    "candidates": [{"id": c} for c in "abcdef"],
    "request_id": "r1",
}


def service(
    path: Path, *, crash_at: str | None = None
) -> AbstractContextManager[tuple[str, subprocess.Popen[bytes]]]:
    return serve_in_subprocess(path, faults={"CLOSEDLOOP_CRASH_AT": crash_at} if crash_at else None)


def _killed_by(url: str, process: subprocess.Popen[bytes], route: str, body: dict[str, object]) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.post(f"{url}{route}", json=body, timeout=10)
    assert process.wait(timeout=10) == -signal.SIGKILL


def _trainer_labels(config: ClosedLoopConfig) -> dict[tuple[str, str], tuple[float, str]]:
    later = (datetime.now(UTC) + timedelta(hours=3)).timestamp()
    trainer = open_trainer(config, clock=lambda: later)
    trainer.run_once(timeout=0)
    labels = {
        (r["decision_id"], r["outcome"]): (r["value"], r["source"]) for r in trainer.store.labels_of("pick")
    }
    trainer.close()
    return labels


def _evaluator_decisions(config: ClosedLoopConfig) -> int:
    gatherer = Gatherer("pick", config.use_cases["pick"], None)
    gatherer.add_decisions(logged_events(config, "decisions"))
    gatherer.add_feedback(logged_events(config, "feedback"))
    return len(gatherer.finish(as_of=(datetime.now(UTC) + timedelta(hours=3)).timestamp()).decision)


@pytest.mark.parametrize("step", ["decide.checked", "decide.logged", "decide.indexed"])
def test_a_decide_killed_at_any_step_is_answered_once_on_retry(
    step: str, tmp_path: Path, redis_prefix: str
) -> None:
    config, path = config_file(tmp_path, redis_prefix)
    with service(path, crash_at=step) as (url, process):
        _killed_by(url, process, "/v1/decide", DECIDE)
    with service(path) as (url, _):
        answer = httpx.post(f"{url}/v1/decide", json=DECIDE, timeout=10)
        assert answer.status_code == 200, answer.text
        again = httpx.post(f"{url}/v1/decide", json=DECIDE, timeout=10).json()
        decision = answer.json()
        assert again == decision  # a replay now, whatever happened before
        reported = httpx.post(
            f"{url}/v1/feedback",
            json={"decision_id": decision["decision_id"], "outcomes": {"click": 1}},
            timeout=10,
        )
        assert reported.status_code == 202, reported.text  # the index knows the decision
    logged = [decode_decision(r) for r in logged_events(config, "decisions")]
    assert {e.event_id for e in logged} == {decision["decision_id"]}
    # Logged twice when the kill came between the log and the index (the retry logs it again, the
    # same), else once: before the log nothing was written, after the index the retry is a replay.
    assert len(logged) == (2 if step == "decide.logged" else 1)
    assert {(e.choice, e.propensity) for e in logged} == {(decision["choice"], decision["propensity"])}
    labels = _trainer_labels(config)
    assert labels == {(decision["decision_id"], "click"): (1.0, "feedback")}
    assert _evaluator_decisions(config) == 1


@pytest.mark.parametrize("step", ["feedback.checked", "feedback.logged", "feedback.claimed"])
def test_feedback_killed_at_any_step_is_counted_once_on_retry(
    step: str, tmp_path: Path, redis_prefix: str
) -> None:
    config, path = config_file(tmp_path, redis_prefix)
    report = {"outcomes": {"click": 1}, "feedback_id": "f1"}
    with service(path, crash_at=step) as (url, process):
        decision = httpx.post(f"{url}/v1/decide", json=DECIDE, timeout=10).json()
        report["decision_id"] = decision["decision_id"]
        _killed_by(url, process, "/v1/feedback", report)
    with service(path) as (url, _):
        retried = httpx.post(f"{url}/v1/feedback", json=report, timeout=10)
        # accepted if the first attempt never claimed it, replayed if it did: counted either way
        expected = "replayed" if step == "feedback.claimed" else "accepted"
        assert (retried.status_code, retried.json()["status"]) == (202, expected), retried.text
        later = {"decision_id": decision["decision_id"], "outcomes": {"click": 0}, "feedback_id": "f2"}
        second = httpx.post(f"{url}/v1/feedback", json=later, timeout=10)
        assert second.status_code == 409, second.text  # the first report counts
    events = [decode_feedback(r) for r in logged_events(config, "feedback")]
    assert {e.event_id for e in events} == {"f1"}
    assert len(events) == (2 if step == "feedback.logged" else 1)
    assert _trainer_labels(config) == {(decision["decision_id"], "click"): (1.0, "feedback")}
