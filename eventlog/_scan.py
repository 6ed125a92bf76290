"""Reading a topic from its beginning, once (`scan_topic`) or again and again, each time only what
was logged since (`TopicReader`): what analyses and a polling tuner need.

Unlike the trainer, a reader keeps no offsets anywhere and joins no consumer group: it assigns
itself every partition, reads past the end offsets it saw when a read began until a poll finds
nothing more, and keeps its positions in memory for the next read.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from closedloop.contracts import InfrastructureConfig

from ._logs import FileEventLog
from ._segments import Position, SealedSegment

BATCH_RECORDS = 20_000
"""Records per batch a reader yields, unless told otherwise."""


def scan_topic(
    infrastructure: InfrastructureConfig,
    topic: str,
    *,
    batch_records: int | None = None,
    consumer_config: Mapping[str, Any] | None = None,
) -> Iterator[list[bytes]]:
    """Batches of a topic's records, oldest first, up to (at least) the end it had when the scan began."""
    reader = TopicReader(infrastructure, topic, batch_records=batch_records, consumer_config=consumer_config)
    try:
        yield from reader.read_new()
    finally:
        reader.close()


class TopicReader:
    """A topic read from its beginning; each `read_new` yields only the records logged since the
    previous one, so a poller's cost follows what is new rather than the whole log."""

    def __init__(
        self,
        infrastructure: InfrastructureConfig,
        topic: str,
        *,
        batch_records: int | None = None,
        consumer_config: Mapping[str, Any] | None = None,
    ) -> None:
        self.topic = topic
        batch_records = batch_records or BATCH_RECORDS
        self.records_read = 0
        self._source: _KafkaReader | _FileReader
        if infrastructure.kafka_bootstrap:
            self._source = _KafkaReader(
                infrastructure.kafka_bootstrap, topic, batch_records, consumer_config or {}
            )
        else:
            self._source = _FileReader(infrastructure, topic, batch_records)

    def read_new(self) -> Iterator[list[bytes]]:
        """Batches of the records after the last read, up to (at least) the end the topic has now."""
        for batch in self._source.read_new():
            self.records_read += len(batch)
            yield batch

    def read_new_parts(self) -> Iterator[list[bytes] | SealedSegment]:
        """What `read_new` reads, with the embedded log's sealed segments as they are, to be read
        whole by whoever takes them (`SealedSegment.read`): in another process, a segment costs
        the sender a path instead of its records. Nothing yielded here counts in
        `records_read`: the taker reports what it read (`count_read`)."""
        if isinstance(self._source, _FileReader):
            yield from self._source.sealed_segments()
        yield from self._source.read_new()

    def count_read(self, records: int) -> None:
        """Records the taker of `read_new_parts` read."""
        self.records_read += records

    def close(self) -> None:
        self._source.close()


class _FileReader:
    def __init__(self, infrastructure: InfrastructureConfig, topic: str, batch_records: int) -> None:
        self._directory = infrastructure.data_path / "events"
        self._topic = topic
        self._batch_records = batch_records
        self._log: FileEventLog | None = None
        self._position = Position(0, 0)

    def sealed_segments(self) -> Iterator[SealedSegment]:
        """The sealed segments past the position, each skipped over as it is handed out."""
        log = self._opened()
        for segment in log.sealed_segments(self._topic, self._position) if log else []:
            self._position = Position(segment.number + 1, 0)
            yield segment

    def read_new(self) -> Iterator[list[bytes]]:
        self._log = self._opened()
        if self._log is None:
            return
        while True:
            records, self._position = self._log.read(
                self._topic, self._position, max_records=self._batch_records
            )
            if not records:
                return
            yield records

    def _opened(self) -> FileEventLog | None:
        if self._log is None and self._directory.exists():  # nothing logged: create no directory
            self._log = FileEventLog(self._directory, read_only=True)
        return self._log

    def close(self) -> None:
        if self._log is not None:
            self._log.close()


class _KafkaReader:
    def __init__(
        self, bootstrap: str, topic: str, batch_records: int, consumer_config: Mapping[str, Any]
    ) -> None:
        from kafka import KafkaConsumer

        self._topic = topic
        self._batch_records = batch_records
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap.split(","),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # what seek_to_first_record relies on
            **{"fetch_max_bytes": 64 * 1024 * 1024, **consumer_config},
        )
        self._assigned: list[Any] = []

    def read_new(self) -> Iterator[list[bytes]]:
        self._assign_new_partitions()
        if not self._assigned:
            return
        consumer, assigned = self._consumer, self._assigned
        ends = consumer.end_offsets(assigned)
        refreshed = False
        while True:
            polled = consumer.poll(timeout_ms=500, max_records=self._batch_records)
            batch = [record.value for records in polled.values() for record in records]
            if batch:
                yield batch
            if not all(consumer.position(tp) >= ends[tp] for tp in assigned):
                continue
            # The end offsets are a floor, not the exact end: a broker may report the start of its
            # last batch (Tansu does). So stop once a poll past them comes back empty or, while
            # producers keep writing, once past a second look at the ends, which lies beyond the end
            # the read began with.
            if not batch or refreshed:
                return
            ends = consumer.end_offsets(assigned)
            refreshed = True

    def _assign_new_partitions(self) -> None:
        """Every partition the topic has now; those seen before keep their positions."""
        from kafka import TopicPartition

        partitions = self._consumer.partitions_for_topic(self._topic) or set()
        new = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        new = [tp for tp in new if tp not in self._assigned]
        if not new:
            return
        positions = {tp: self._consumer.position(tp) for tp in self._assigned}
        self._assigned = [*self._assigned, *new]
        self._consumer.assign(self._assigned)
        for tp, offset in positions.items():
            self._consumer.seek(tp, offset)
        seek_to_first_record(self._consumer, new)

    def close(self) -> None:
        self._consumer.close()


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
