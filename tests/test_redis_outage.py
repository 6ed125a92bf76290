"""The decision path while Redis is down: decisions go on from the models in memory and are
logged; reports are logged unverified (the checks that need the index wait for the joins, which
count each report once); once Redis is back, feedback for decisions made during the outage is kept
as orphan and the trainer joins it. A private redis-server is killed and restarted (never the
shared one)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import PrivateRedis, make_config

from closedloop.contracts import DecideRequest, FeedbackIn, Topics, decode_decision
from closedloop.decision_service import open_engine
from closedloop.eventlog import FileEventLog, Position
from closedloop.trainer import open_trainer

pytestmark = pytest.mark.integration


def _pick(unit: str) -> DecideRequest:
    return DecideRequest(
        use_case="pick", unit_id=unit, candidates=[{"id": "a"}, {"id": "b"}], request_id=f"r-{unit}"
    )


def test_decisions_go_on_while_redis_is_down_and_their_feedback_is_joined(
    tmp_path: Path, private_redis: PrivateRedis
) -> None:
    config = make_config(tmp_path, redis_url=private_redis.url)
    engine = open_engine(config, seed=1)
    before = engine.decide(_pick("before"))
    private_redis.stop()

    during = engine.decide(_pick("during"))  # no 503: the models are in memory, the log is local
    assert engine.status().degraded
    assert 'closedloop_index_unavailable_total{path="decide"} 1.0' in engine.render_metrics().decode()
    unverified = engine.log_feedback(
        [
            FeedbackIn(decision_id=before.decision_id, outcomes={"click": 1}, feedback_id="f-before"),
            FeedbackIn(decision_id=before.decision_id, outcomes={"click": 0}, feedback_id="f-again"),
            FeedbackIn(decision_id=before.decision_id, outcomes={"click": float("nan")}),
        ]
    )
    # logged without the index's checks (the joins count the first report), but still checked
    assert [r.status for r in unverified] == ["unverified", "unverified", "invalid"]

    private_redis.start()  # empty: it kept nothing
    results = engine.log_feedback(
        [FeedbackIn(decision_id=during.decision_id, outcomes={"click": 1}, feedback_id="f-during")]
    )
    assert [r.status for r in results] == ["orphan"]  # unknown to the new index, kept
    engine.close()

    log = FileEventLog(config.infrastructure.data_path / "events", read_only=True)
    decisions, _ = log.read(Topics("closedloop").decisions, Position(0, 0))
    log.close()
    assert [decode_decision(r).event_id for r in decisions] == [before.decision_id, during.decision_id]
    later = (datetime.now(UTC) + timedelta(hours=2)).timestamp()
    trainer = open_trainer(config, clock=lambda: later)
    trainer.run_once(timeout=0)
    labels = {r["decision_id"]: (r["value"], r["source"]) for r in trainer.store.labels_of("pick")}
    trainer.close()
    # the first report counts: f-before's click, not f-again's, though no index told them apart
    assert labels == {before.decision_id: (1.0, "feedback"), during.decision_id: (1.0, "feedback")}


def test_a_registry_that_lost_its_data_never_reuses_a_version_name(
    tmp_path: Path, private_redis: PrivateRedis
) -> None:
    """A non-persistent Redis restarts empty and numbers models from 1 again: the new model's name
    still differs (its content id), so the running service swaps to it and logs its name."""
    from factories import train_model_text

    from closedloop.registry import RedisModelRegistry

    config = make_config(tmp_path, redis_url=private_redis.url)
    engine = open_engine(config, seed=1)
    names = engine.feature_names("pick")
    first = RedisModelRegistry.from_url(private_redis.url).publish(
        "pick", "click", train_model_text(names, seed=1), {}, champion=True
    )
    engine.refresh_models()
    assert engine.decide(_pick("a")).model_versions == {"click": first.version}

    private_redis.stop()
    private_redis.start()  # empty
    second = RedisModelRegistry.from_url(private_redis.url).publish(
        "pick", "click", train_model_text(names, seed=2), {}, champion=True
    )
    assert second.version[:3] == first.version[:3] == "v1-"
    assert second.version != first.version
    engine.refresh_models()
    assert engine.decide(_pick("b")).model_versions == {"click": second.version}
    engine.close()
