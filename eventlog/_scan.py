"""Reading a whole topic once, from its beginning to where it ends now: what analyses need.

Unlike the trainer, a report keeps no offsets and joins no consumer group: it assigns itself every
partition, reads past the end offsets it saw when it began until a poll finds nothing more, and stops.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from closedloop.contracts import InfrastructureConfig
from closedloop.eventlog._logs import FileEventLog
from closedloop.eventlog._segments import Position


def scan_topic(
    infrastructure: InfrastructureConfig,
    topic: str,
    *,
    batch_records: int = 20_000,
    consumer_config: Mapping[str, Any] | None = None,
) -> Iterator[list[bytes]]:
    """Batches of a topic's records, oldest first, up to (at least) the end it had when the scan began."""
    if infrastructure.kafka_bootstrap:
        yield from _scan_kafka(infrastructure.kafka_bootstrap, topic, batch_records, consumer_config or {})
        return
    directory = infrastructure.data_path / "events"
    if not directory.exists():
        return
    log = FileEventLog(directory, read_only=True)
    position = Position(0, 0)
    while True:
        records, position = log.read(topic, position, max_records=batch_records)
        if not records:
            return
        yield records


def seek_to_first_record(consumer: Any, partitions: Iterable[Any]) -> None:
    """Point a kafka-python consumer, made with ``auto_offset_reset="earliest"``, at the first
    record each partition still holds.

    Not ``seek_to_beginning``: that trusts the broker's answer for the earliest offset, and the
    Tansu broker (memory storage) has answered a later one after concurrent producers, so a reader
    skipped records that were there. Offset 0 is the first record on a broker that deleted
    nothing; where retention deleted it, the broker answers "out of range" and the consumer's
    reset policy moves to the earliest offset it still has."""
    from kafka import TopicPartition

    for partition in partitions:
        consumer.seek(TopicPartition(partition.topic, partition.partition), 0)


def _scan_kafka(
    bootstrap: str, topic: str, batch_records: int, consumer_config: Mapping[str, Any]
) -> Iterator[list[bytes]]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap.split(","),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",  # what seek_to_first_record relies on
        **{"fetch_max_bytes": 64 * 1024 * 1024, **consumer_config},
    )
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not assigned:
            return
        consumer.assign(assigned)
        seek_to_first_record(consumer, assigned)
        ends = consumer.end_offsets(assigned)
        refreshed = False
        while True:
            polled = consumer.poll(timeout_ms=500, max_records=batch_records)
            batch = [record.value for records in polled.values() for record in records]
            if batch:
                yield batch
            if not all(consumer.position(tp) >= ends[tp] for tp in assigned):
                continue
            # The end offsets are a floor, not the exact end: a broker may report the start of its
            # last batch (Tansu does). So stop once a poll past them comes back empty or, while
            # producers keep writing, once past a second look at the ends, which lies beyond the end
            # the scan began with.
            if not batch or refreshed:
                return
            ends = consumer.end_offsets(assigned)
            refreshed = True
    finally:
        consumer.close()
