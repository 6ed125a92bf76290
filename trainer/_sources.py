"""Where the trainer reads decision and feedback events: Kafka (a consumer group) or embedded files.

The trainer's database, not the broker, is the source of truth for how far it has read: offsets
are stored in the same transaction as the examples they produced, and a source is told to start
from them (`seek`). Committing them to Kafka as well is only so that lag monitors see the group.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from closedloop.contracts import Topics
from closedloop.eventlog import FileEventLog, LogSlice, Position, ensure_topics, seek_to_first_record

from ._store import SourceOffsets, StartOffsets

logger = logging.getLogger(__name__)

# A file position packed into one integer offset: segments are far smaller than 2**40 bytes.
_SEGMENT_SHIFT = 40


@dataclass
class EventBatch:
    decisions: list[bytes] = field(default_factory=list)
    feedback: list[bytes] = field(default_factory=list)
    positions: SourceOffsets = field(default_factory=dict)
    """Where each read (topic, partition) continues after this batch."""
    starts: StartOffsets = field(default_factory=dict)
    """Where each read (topic, partition) began: what the database must still hold for the batch
    to be stored (None: nothing stored yet). Another trainer that took the partition meanwhile
    has moved it, and this batch is dropped (`OffsetsMoved`)."""
    at_end: bool = False
    """Set on an empty batch when the source has been read to its end (not merely slow to answer)."""
    found: tuple[LogSlice, LogSlice] | None = None
    """The embedded log's decision and feedback records of the batch, found but not read yet
    (`records` reads them; so does the preparing worker, in its own process)."""

    def __len__(self) -> int:
        found = len(self.found[0]) + len(self.found[1]) if self.found else 0
        return len(self.decisions) + len(self.feedback) + found

    def records(self) -> tuple[list[bytes], list[bytes]]:
        """The batch's decision and feedback records, read now if they were only found."""
        if self.found is None:
            return self.decisions, self.feedback
        return self.found[0].read(), self.found[1].read()


class EventSource(Protocol):
    name: str
    """Identifies the source's offsets in the database (e.g. the consumer group)."""

    def seek(self, positions: SourceOffsets) -> None: ...

    def poll(self, max_records: int, timeout: float) -> EventBatch:
        """The next events; an empty batch if nothing new came within ``timeout`` (see ``at_end``)."""
        ...

    def committed(self, positions: SourceOffsets) -> None:
        """Told after the database committed a batch ending at ``positions``."""
        ...

    def read_to_end(self, stored: SourceOffsets) -> bool:
        """Whether ``stored`` (the database's offsets, every trainer's) reaches the end of every
        partition of the log: only then may windows close, or a report still unread by another
        trainer would find its window closed with the default."""
        ...

    def close(self) -> None: ...


class FileEventSource:
    """Reads the embedded event log's segment files."""

    def __init__(self, log: FileEventLog, topics: Topics) -> None:
        self.name = f"files:{log.directory}"
        self._log = log
        self._topics = topics
        self._positions: dict[str, Position] = {
            topics.decisions: Position(0, 0),
            topics.feedback: Position(0, 0),
        }
        self._stored: StartOffsets = {}

    def seek(self, positions: SourceOffsets) -> None:
        self._stored = {(topic, 0): positions.get((topic, 0)) for topic in self._positions}
        for (topic, _), offset in positions.items():
            if topic in self._positions:
                self._positions[topic] = Position(
                    offset >> _SEGMENT_SHIFT, offset & ((1 << _SEGMENT_SHIFT) - 1)
                )

    def poll(self, max_records: int, timeout: float) -> EventBatch:
        batch = self._read(max_records)
        if not batch and timeout > 0:
            self._log.topic(self._topics.decisions).wait_for_append(
                self._positions[self._topics.decisions], timeout
            )
            batch = self._read(max_records)
        batch.at_end = not batch
        return batch

    def _read(self, max_records: int) -> EventBatch:
        batch = EventBatch()
        decisions, feedback = self._log.topic(self._topics.decisions), self._log.topic(self._topics.feedback)
        # Decisions first, so that feedback read in the same batch finds its decision; feedback
        # only as far through its log as the decisions are through theirs: logs appended side
        # by side are read side by side, and a report read long before its decision would wait
        # for it in the database (a long catch-up read the shorter feedback log ahead).
        decided = decisions.find(self._positions[self._topics.decisions], max_records=max_records)
        until = feedback.position_at(decisions.share_before(decided.end))
        reported = feedback.find(self._positions[self._topics.feedback], max_records=max_records, until=until)
        batch.found = (decided, reported)
        for topic, found in ((self._topics.decisions, decided), (self._topics.feedback, reported)):
            if found.count:
                end = found.end
                self._positions[topic] = end
                batch.starts[(topic, 0)] = self._stored.get((topic, 0))
                batch.positions[(topic, 0)] = (end.segment << _SEGMENT_SHIFT) | end.offset
                self._stored[(topic, 0)] = batch.positions[(topic, 0)]
        return batch

    def committed(self, positions: SourceOffsets) -> None:
        pass

    def read_to_end(self, stored: SourceOffsets) -> bool:
        return True  # one trainer reads the files: its own catch-up covers the whole log

    def close(self) -> None:
        pass


class KafkaEventSource:
    """A member of the trainer's consumer group over the decision and feedback topics."""

    def __init__(
        self,
        bootstrap_servers: str,
        topics: Topics,
        *,
        group_id: str,
        stored_offsets: Callable[[str], SourceOffsets],
        consumer_config: Mapping[str, Any] | None = None,
    ) -> None:
        from kafka import KafkaConsumer

        self.name = f"kafka:{group_id}"
        self._topics = topics
        self.stored_offsets = stored_offsets
        self._stored: StartOffsets = {}
        """What the database holds for each assigned partition, as far as this source knows."""
        ensure_topics(bootstrap_servers, [topics.decisions, topics.feedback])
        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap_servers.split(","),
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **{
                "session_timeout_ms": 10_000,
                "heartbeat_interval_ms": 1_000,
                # Training happens between polls; a member that trains longer than this is
                # dropped from the group and rejoins, which the stored offsets make harmless.
                "max_poll_interval_ms": 300_000,
                **(consumer_config or {}),
            },
        )
        self._consumer.subscribe([topics.decisions, topics.feedback], listener=_seek_listener(self))

    def seek(self, positions: SourceOffsets) -> None:
        from kafka import TopicPartition

        # Called from the rebalance listener, on the consumer's IO thread: no blocking calls here.
        assigned = self._consumer.assignment()
        self._stored = {(p.topic, p.partition): positions.get((p.topic, p.partition)) for p in assigned}
        for partition in assigned:
            offset = positions.get((partition.topic, partition.partition))
            if offset is None:
                # Not in the database: nothing of it was stored yet, whatever the group committed.
                seek_to_first_record(self._consumer, [partition])
            else:
                self._consumer.seek(TopicPartition(partition.topic, partition.partition), offset)

    def poll(self, max_records: int, timeout: float) -> EventBatch:
        batch = EventBatch()
        deadline = time.monotonic() + timeout
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            polled = self._consumer.poll(timeout_ms=int(remaining * 1000), max_records=max_records)
            for partition, records in polled.items():
                into = batch.decisions if partition.topic == self._topics.decisions else batch.feedback
                into.extend(record.value for record in records)
                key = (partition.topic, partition.partition)
                batch.starts[key] = self._stored.get(key)
                batch.positions[key] = self._stored[key] = records[-1].offset + 1
            if batch:
                return batch
            if remaining <= 0:
                batch.at_end = self._at_end()
                return batch

    def _at_end(self) -> bool:
        """Whether the group assigned us partitions and we have read each of them to its end."""
        assigned = list(self._consumer.assignment())
        if not assigned:
            return False  # still joining the group: the log's end is not known yet
        ends = self._consumer.end_offsets(assigned)
        return all(self._consumer.position(partition) >= ends[partition] for partition in assigned)

    def read_to_end(self, stored: SourceOffsets) -> bool:
        from kafka import TopicPartition

        every = [
            TopicPartition(topic, number)
            for topic in (self._topics.decisions, self._topics.feedback)
            for number in sorted(self._consumer.partitions_for_topic(topic) or ())
        ]
        if not every:
            return False  # the topics' partitions are not known yet
        ends = self._consumer.end_offsets(every)
        firsts = self._consumer.beginning_offsets(every)
        return all(stored.get((p.topic, p.partition), firsts[p]) >= ends[p] for p in every)

    def partitions(self) -> list[tuple[str, int]]:
        """The (topic, partition)s this member of the group reads now."""
        return sorted((p.topic, p.partition) for p in self._consumer.assignment())

    def committed(self, positions: SourceOffsets) -> None:
        from kafka import TopicPartition
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata

        try:
            self._consumer.commit(
                {
                    TopicPartition(topic, partition): OffsetAndMetadata(offset, "", -1)
                    for (topic, partition), offset in positions.items()
                }
            )
        except KafkaError as exc:  # the database holds the truth; the group's copy can lag
            logger.warning("committing offsets to the consumer group failed: %s", exc)

    def close(self) -> None:
        self._consumer.close()


def _seek_listener(source: KafkaEventSource) -> Any:
    from kafka import ConsumerRebalanceListener

    class SeekToStored(ConsumerRebalanceListener):  # type: ignore[misc]
        """On every (re)assignment, continue from the offsets the database holds."""

        def on_partitions_revoked(self, revoked: Any) -> None:
            pass

        def on_partitions_assigned(self, assigned: Any) -> None:
            source.seek(source.stored_offsets(source.name))
            logger.info(
                "reading partitions %s",
                ", ".join(f"{p.topic}[{p.partition}]" for p in sorted(assigned)) or "none",
            )

    return SeekToStored()
