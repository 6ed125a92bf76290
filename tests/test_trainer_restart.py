"""Kill the trainer (SIGKILL) in the middle of a stream and start it again: every outcome is
counted exactly once, because examples, labels and offsets are committed together."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from conftest import Broker, Database, make_config, trainer_killed_once_stored
from events import decision_event, feedback_event

from closedloop.contracts import ClosedLoopConfig, Topics
from closedloop.eventlog import KafkaEventLog
from closedloop.trainer import ExampleStore, open_trainer

pytestmark = pytest.mark.integration

DECISIONS = 6000
FAST_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000, "max_poll_interval_ms": 6000}

# A trainer that stores small batches, slowly, until it is killed.
TRAINER_PROCESS = f"""
import sys, time
from closedloop.contracts import parse_config
from closedloop.trainer import open_trainer
config = parse_config(open(sys.argv[1]).read(), environ={{}})
schema = sys.argv[2] or None
trainer = open_trainer(config, consumer_config={FAST_GROUP!r}, database_schema=schema)
while True:
    trainer.consume(max_records=200, timeout=1.0)
    time.sleep(0.02)
"""


def _publish_stream(config: ClosedLoopConfig, tmp_path: Path) -> dict[str, float]:
    """Decisions with feedback for every third one (each feedback sent twice); returns the truth."""
    topics = Topics(config.infrastructure.topic_prefix)
    log = KafkaEventLog(
        config.infrastructure.kafka_bootstrap or "",
        tmp_path / "outbox",
        topics=[topics.decisions, topics.feedback],
    )
    expected: dict[str, float] = {}
    decisions, feedback = [], []
    for i in range(DECISIONS):
        decision_id = f"d{i}"
        decisions.append((decision_id, decision_event(decision_id, seconds=i)))
        if i % 3 == 0:
            value = float(i % 2)
            expected[decision_id] = value
            event = feedback_event(f"f{i}", decision_id, {"click": value}, seconds=i + 10)
            feedback.extend([(decision_id, event), (decision_id, event)])
    log.append(topics.decisions, decisions)
    log.append(topics.feedback, feedback)
    assert log.wait_until_delivered(60)
    log.close()
    return expected


def _stored(store: ExampleStore) -> int:
    return store.counters().get("decisions", 0)


def test_a_killed_trainer_resumes_without_losing_or_double_counting(
    tmp_path: Path, broker: Broker, database: Database
) -> None:
    config = make_config(tmp_path, kafka_bootstrap=broker.bootstrap, database_url=database.url)
    expected = _publish_stream(config, tmp_path)
    config_file = tmp_path / "closedloop.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))

    trainer_killed_once_stored(TRAINER_PROCESS, config_file, database, decisions=1500)
    store = ExampleStore.from_url(database.url, schema=database.schema)
    assert _stored(store) < DECISIONS  # killed mid-stream
    store.close()

    trainer = open_trainer(config, consumer_config=FAST_GROUP, database_schema=database.schema)
    try:
        deadline = time.monotonic() + 60
        while _stored(trainer.store) < DECISIONS and time.monotonic() < deadline:
            trainer.catch_up(timeout=1.0)
        trainer.catch_up(timeout=1.0)  # anything beyond would be a double count
        labels = {row["decision_id"]: row["value"] for row in trainer.store.labels_of("pick")}
        counters = trainer.store.counters()
    finally:
        trainer.close()
    assert counters["decisions"] == DECISIONS
    assert labels == expected
    assert counters["feedback_joined"] == len(expected)
