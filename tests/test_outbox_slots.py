"""Service processes sharing one outbox directory (replicas on one volume) on the Tansu broker:
each writes a slot of its own and every event reaches Kafka; what a process left behind while the
broker was down is shipped by another one, every event exactly once."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from conftest import Broker, consume_all

from closedloop.eventlog import KafkaEventLog

TOPIC = "slots.decisions"


def events(prefix: str, count: int) -> list[tuple[str, bytes]]:
    return [(f"{prefix}-{i}", f'{{"event_id": "{prefix}-{i}"}}'.encode()) for i in range(count)]


def test_two_writers_on_one_outbox_take_their_own_slots(tmp_path: Path, broker: Broker) -> None:
    first = KafkaEventLog(broker.bootstrap, tmp_path / "outbox", topics=[TOPIC])
    second = KafkaEventLog(broker.bootstrap, tmp_path / "outbox", topics=[TOPIC])
    try:
        assert (first.slot, second.slot) == (0, 1)
        first.append(TOPIC, events("a", 200))
        second.append(TOPIC, events("b", 300))
        assert first.wait_until_delivered(30)
        assert second.wait_until_delivered(30)
    finally:
        first.close()
        second.close()
    assert (tmp_path / "outbox" / "slot-1" / "checkpoint.json").exists()
    received = Counter(consume_all(broker.bootstrap, TOPIC, expected=500))
    assert received == Counter(value for _, value in events("a", 200) + events("b", 300))


def test_a_stopped_writers_backlog_is_shipped_by_another_exactly_once(tmp_path: Path, broker: Broker) -> None:
    staying = KafkaEventLog(broker.bootstrap, tmp_path / "outbox", topics=[TOPIC], adopt_interval=0.2)
    staying.append(TOPIC, events("early", 50))
    assert staying.wait_until_delivered(30)
    early = consume_all(broker.bootstrap, TOPIC, expected=50)
    broker.stop()
    leaving = KafkaEventLog(broker.bootstrap, tmp_path / "outbox", topics=[TOPIC], adopt_interval=3600)
    assert leaving.slot == 1
    leaving.append(TOPIC, events("left", 400))  # acknowledged while the broker is down...
    assert leaving.stats()["backlog"] is True
    leaving.close()  # ...and its process goes away with them still in its slot
    broker.start()  # empty: its storage is memory
    try:
        deadline = time.monotonic() + 60
        while staying.adopted < 400 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert staying.adopted == 400
        received = consume_all(broker.bootstrap, TOPIC, expected=400)
    finally:
        staying.close()
    assert len(early) == 50
    assert Counter(received) == Counter(value for _, value in events("left", 400))  # each exactly once
    # Both slots are free and fully shipped: a new writer takes slot 0 and finds nothing stranded.
    again = KafkaEventLog(broker.bootstrap, tmp_path / "outbox", topics=[TOPIC], adopt_interval=3600)
    try:
        assert again.slot == 0
        assert again.ship_stranded() == 0
    finally:
        again.close()
