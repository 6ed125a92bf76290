"""Two trainer processes in one consumer group over 4 partitions (issue #16, point 7), one killed
with SIGKILL mid-stream and started again: each joins the partitions the group gives it, a batch
read by two of them (a rebalance mid-batch) is stored once, only the leader closes windows — and
only once every partition is read, by whichever trainer — and it trains on every partition's
examples. On a real Kafka-protocol broker (Tansu) and SQLite and PostgreSQL."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import Broker, Database, make_config
from events import T0, decision_event, feedback_event

from closedloop.contracts import ClosedLoopConfig, RetrainTrigger, Topics
from closedloop.eventlog import KafkaEventLog, ensure_topics
from closedloop.trainer import ExampleStore

pytestmark = pytest.mark.integration

DECISIONS = 3000
EVENTS = DECISIONS * 2  # each decision, and two copies of every other one's feedback
PARTITIONS = 4
ASSIGNED = "reading partitions closedloop"
HAZARD_SESSION_MS = 15_000
SETTLE = 20.0
"""Seconds from publishing events to the end of their windows (their delivery takes one or two)."""

# A trainer that stores small batches, slowly, and runs a cycle (close windows, train: if it leads) when idle.
TRAINER_PROCESS = """
import logging, sys, time
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
from closedloop.contracts import parse_config
from closedloop.trainer import open_trainer
config = parse_config(open(sys.argv[1]).read(), environ={})
session = int(sys.argv[3])
# a rebalance waits for members as long as their session lasts: shorter, and the broker's group
# coordinator (Tansu) was seen rejoining in a loop while a dead member's session still ran
rebalance = max(10000, session)
group = {"session_timeout_ms": session, "heartbeat_interval_ms": 1000, "max_poll_interval_ms": rebalance}
trainer = open_trainer(config, consumer_config=group, database_schema=sys.argv[2] or None)
while True:
    if not trainer.consume(max_records=50, timeout=0.5):
        trainer.run_once(timeout=0.2)
    time.sleep(0.1)
"""


def _publish(config: ClosedLoopConfig, outbox: Path, numbers: range) -> dict[str, float]:
    """Decisions whose windows end ``SETTLE`` seconds from now, feedback (sent twice) for every
    even one, all keyed by decision id so that a decision and its feedback share a partition;
    returns the labels due."""
    topics = Topics(config.infrastructure.topic_prefix)
    bootstrap = config.infrastructure.kafka_bootstrap or ""
    ensure_topics(bootstrap, [topics.decisions, topics.feedback], partitions=PARTITIONS)
    log = KafkaEventLog(bootstrap, outbox, topics=[topics.decisions, topics.feedback])
    expected: dict[str, float] = {}
    decisions, feedback = [], []
    # Windows (30 min, plus the trainers' 60 s of lateness) end once every event is delivered: a
    # report shipped before its decision waits for it, and with the events long past their
    # windows a leader closing windows meanwhile expired it (seen: one label the default).
    first = time.time() - T0 - 30 * 60 - 60 + SETTLE
    for i in numbers:
        decision_id = f"d{i}"
        decided = first + i / 1000
        decisions.append((decision_id, decision_event(decision_id, seconds=decided)))
        if i % 2 == 0:
            expected[decision_id] = float(i % 4 == 0)
            event = feedback_event(
                f"f{i}", decision_id, {"click": expected[decision_id]}, seconds=decided + 10
            )
            feedback.extend([(decision_id, event), (decision_id, event)])
        else:
            expected[decision_id] = 0.0  # the outcome's default, once every partition is read
    log.append(topics.decisions, decisions)
    log.append(topics.feedback, feedback)
    assert log.wait_until_delivered(60)
    log.close()
    return expected


def _start(
    config_file: Path, database: Database, log: Path, *, session_ms: int = 6000
) -> subprocess.Popen[bytes]:
    """A trainer process; ``session_ms``: how long the group takes to notice it died."""
    with log.open("ab") as stderr:
        return subprocess.Popen(
            [sys.executable, "-c", TRAINER_PROCESS, str(config_file), database.schema or "", str(session_ms)],
            stderr=stderr,
        )


def _events_stored(store: ExampleStore) -> int:
    counters = store.counters()
    return counters.get("decisions", 0) + counters.get("feedback_events", 0)


def _wait(condition: object, *, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_two_trainers_share_four_partitions_and_a_killed_one_loses_and_doubles_nothing(
    tmp_path: Path, broker: Broker, database: Database
) -> None:
    config = make_config(tmp_path, kafka_bootstrap=broker.bootstrap, database_url=database.url)
    # Retrain on any new final label: the leader may train before the last partition's windows
    # close (2,894 of the 3,000 labels final was seen), and with the default trigger (1,000 new
    # labels) it would never train again on all of them.
    pick = config.use_cases["pick"].model_copy(update={"retrain": RetrainTrigger(min_new_examples=1)})
    config = config.model_copy(update={"use_cases": {**config.use_cases, "pick": pick}})
    expected = _publish(config, tmp_path / "outbox-1", range(DECISIONS // 2))
    config_file = tmp_path / "closedloop.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    logs = {name: tmp_path / f"trainer-{name}.log" for name in ("a", "b")}
    store = ExampleStore.from_url(database.url, schema=database.schema)
    processes = {name: _start(config_file, database, log) for name, log in logs.items()}
    try:
        # both hold partitions, then one is killed, and the second half of the stream comes
        _wait(
            lambda: all(ASSIGNED in log.read_text() for log in logs.values()),
            seconds=60,
            what="both trainers to be given partitions",
        )
        _wait(lambda: _events_stored(store) >= EVENTS // 6, seconds=60, what="a sixth stored")
        processes["a"].send_signal(signal.SIGKILL)
        processes["a"].wait(timeout=10)
        expected |= _publish(config, tmp_path / "outbox-2", range(DECISIONS // 2, DECISIONS))
        processes["a"] = _start(config_file, database, logs["a"])
        _wait(
            lambda: logs["a"].read_text().count(ASSIGNED) >= 2,
            seconds=60,
            what="the restarted trainer to be given partitions again",
        )
        _wait(lambda: len(store.labels_of("pick")) == DECISIONS, seconds=120, what="every label")
        _wait(
            lambda: any(run.labels_seen == DECISIONS for run in store.runs("pick")),
            seconds=120,
            what="a training run on every partition's labels",
        )
    finally:
        for process in processes.values():
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
    counters = store.counters()
    labels = {row["decision_id"]: (row["value"], row["source"]) for row in store.labels_of("pick")}
    runs = [run for run in store.runs("pick") if run.labels_seen == DECISIONS]
    offsets = store.offsets(f"kafka:{config.infrastructure.topic_prefix}.trainer")
    store.close()

    # nothing lost, nothing counted twice: each decision once, each feedback joined once (its
    # copy a duplicate), every even decision labelled by its feedback, every odd one by the
    # default only after its partition was read by whichever trainer held it
    assert counters["decisions"] == DECISIONS
    assert counters["feedback_joined"] == DECISIONS // 2
    assert counters["feedback_duplicate"] == DECISIONS // 2
    assert counters["defaults_applied"] == DECISIONS // 2
    assert len(expected) == DECISIONS
    for decision_id, value in expected.items():
        source = "feedback" if int(decision_id[1:]) % 2 == 0 else "default"
        assert labels[decision_id] == (value, source), decision_id
    # every partition of both topics read to its end, by the two trainers between them
    assert sorted(offsets) == sorted(
        (topic, partition)
        for topic in (
            f"{config.infrastructure.topic_prefix}.decisions",
            f"{config.infrastructure.topic_prefix}.feedback",
        )
        for partition in range(PARTITIONS)
    )
    assert sum(offsets.values()) == DECISIONS * 2  # decisions + two copies of half of them as feedback
    assert "this trainer leads" in logs["a"].read_text() + logs["b"].read_text()
    lineage = runs[0].report["lineage"]
    assert lineage["rows_train"] + lineage["rows_holdout"] == DECISIONS


def test_the_leader_closes_no_window_while_another_trainers_partition_is_unread(
    tmp_path: Path, broker: Broker, database: Database
) -> None:
    """The hazard: trainer A has stored its partitions' decisions and dies before their feedback,
    which is already in the log; the leader B is caught up on its own partitions when the windows
    end. Closing them then would give A's decisions the default although their reports are in
    the log: B must wait until A's partitions are read (by B, once the group gives them to it)."""
    config = make_config(tmp_path, kafka_bootstrap=broker.bootstrap, database_url=database.url)
    topics = Topics(config.infrastructure.topic_prefix)
    ensure_topics(broker.bootstrap, [topics.decisions, topics.feedback], partitions=PARTITIONS)
    config_file = tmp_path / "closedloop.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    logs = {name: tmp_path / f"trainer-{name}.log" for name in ("a", "b")}
    store = ExampleStore.from_url(database.url, schema=database.schema)
    processes = {"b": _start(config_file, database, logs["b"], session_ms=HAZARD_SESSION_MS)}
    try:
        _wait(lambda: "this trainer leads" in logs["b"].read_text(), seconds=60, what="b to lead")
        processes["a"] = _start(config_file, database, logs["a"], session_ms=HAZARD_SESSION_MS)
        _wait(lambda: ASSIGNED in logs["a"].read_text(), seconds=60, what="a to be given partitions")
        _wait(lambda: logs["b"].read_text().count(ASSIGNED) >= 2, seconds=60, what="the group to rebalance")
        # windows (30 min, plus the trainer's 60 s of lateness) end 8 s after the decisions are
        # logged: after their feedback is (in about 2 s), before the group gives a's partitions to b
        windows_end = time.time() + 8
        decided = windows_end - T0 - 30 * 60 - 60
        count = 400
        log = KafkaEventLog(broker.bootstrap, tmp_path / "outbox", topics=[topics.decisions, topics.feedback])
        log.append(
            topics.decisions, [(f"d{i}", decision_event(f"d{i}", seconds=decided)) for i in range(count)]
        )
        assert log.wait_until_delivered(30)
        _wait(lambda: store.counters().get("decisions", 0) == count, seconds=10, what="every decision stored")
        processes["a"].send_signal(signal.SIGKILL)  # its partitions wait 15 s for the group to notice
        processes["a"].wait(timeout=10)
        log.append(
            topics.feedback,
            [
                (f"d{i}", feedback_event(f"f{i}", f"d{i}", {"click": 1.0}, seconds=decided + 5))
                for i in range(count)
            ],
        )
        assert log.wait_until_delivered(30)
        log.close()
        # the hazard needs the reports in the log before the windows end: a machine too slow for
        # that says so here rather than as a wrong label below
        assert time.time() < windows_end - 1, "the reports reached the log too late to test anything"
        _wait(lambda: len(store.labels_of("pick")) == count, seconds=90, what="every label")
    finally:
        for process in processes.values():
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
    labels = {row["decision_id"]: (row["value"], row["source"]) for row in store.labels_of("pick")}
    counters = store.counters()
    store.close()
    assert labels == {f"d{i}": (1.0, "feedback") for i in range(count)}
    assert counters.get("defaults_applied", 0) == 0
    assert counters["feedback_joined"] == count
