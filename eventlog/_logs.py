"""The decision and feedback logs: Kafka behind a durable outbox, or segment files when embedded."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from ._outbox import Checkpoint, RecordFuture, Shipper, encode_record
from ._segments import Position, SealedSegment, SegmentLog
from ._slots import claim_slot, existing_slots, open_stranded, slot_directory

logger = logging.getLogger(__name__)

KeyedRecord = tuple[str, bytes]


class EventLog(Protocol):
    def append(self, topic: str, records: Sequence[KeyedRecord]) -> None:
        """Durably record ``(key, value)`` pairs; once this returns they will reach the log."""
        ...

    def stats(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class KafkaEventLog:
    """Events go to a local outbox first and are shipped to Kafka by a background thread.

    Processes that share ``outbox_dir`` (replicas on one volume) each write a slot of their own,
    and each ships, every ``adopt_interval`` seconds, what a stopped process left in its slot.
    ``producer_config``: librdkafka settings (``"compression.type": "lz4"``, ...) over ours."""

    def __init__(
        self,
        bootstrap_servers: str,
        outbox_dir: str | Path,
        *,
        topics: Sequence[str] = (),
        partitions: int = 3,
        producer_config: dict[str, Any] | None = None,
        fsync_interval: float = 0.1,
        ack_timeout: float = 15.0,
        adopt_interval: float = 10.0,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self._topics = set(topics)
        self._partitions = partitions
        self._producer_config = producer_config or {}
        self._root = Path(outbox_dir)
        self._fsync_interval = fsync_interval
        self._ack_timeout = ack_timeout
        self.slot, self._outbox = claim_slot(self._root, fsync_interval=fsync_interval)
        self._shipper = Shipper(
            self._outbox,
            self._connect,
            checkpoint=Checkpoint(slot_directory(self._root, self.slot) / "checkpoint.json"),
            ack_timeout=ack_timeout,
        )
        self._shipper.start()
        self.adopted = 0
        self._closing = threading.Event()
        self._adopter = threading.Thread(
            target=self._adopt_periodically, args=(adopt_interval,), name="outbox-adopter", daemon=True
        )
        self._adopter.start()

    def append(self, topic: str, records: Sequence[KeyedRecord]) -> None:
        self._topics.add(topic)
        self._outbox.append(encode_record(topic, key, value) for key, value in records)

    def stats(self) -> dict[str, Any]:
        return {
            "backend": "kafka",
            "connected": self._shipper.connected,
            "delivered": self._shipper.delivered,
            "send_failures": self._shipper.failures,
            "backlog": self._shipper.backlog(),
        }

    def wait_until_delivered(self, timeout: float) -> bool:
        """True once every appended record is acknowledged by Kafka (for shutdown and tests)."""
        deadline = time.monotonic() + timeout
        while self._shipper.backlog():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self) -> None:
        self._closing.set()
        self._adopter.join(timeout=self._ack_timeout + 5)
        self._shipper.stop()
        self._outbox.close()

    def ship_stranded(self) -> int:
        """Ship every other slot's events whose writer is gone; returns how many were shipped.
        Stops early (leaving the rest for later) when this log closes."""
        shipped = 0
        for slot in existing_slots(self._root):
            if slot == self.slot or self._closing.is_set():
                continue
            stranded = open_stranded(self._root, slot, fsync_interval=self._fsync_interval)
            if stranded is None:
                continue
            log, checkpoint = stranded
            shipper = Shipper(log, self._connect, checkpoint=checkpoint, ack_timeout=self._ack_timeout)
            shipper.start()
            try:
                while shipper.backlog() and not self._closing.wait(0.05):
                    pass
            finally:
                shipper.stop(drain_timeout=0)
                log.close()
            logger.info("shipped %d events left in outbox slot %d", shipper.delivered, slot)
            shipped += shipper.delivered
        self.adopted += shipped
        return shipped

    def _adopt_periodically(self, interval: float) -> None:
        while True:
            try:
                self.ship_stranded()
            except Exception:  # a bad slot must not stop this process's own shipping
                logger.exception("shipping a stranded outbox slot failed")
            if self._closing.wait(interval):
                return

    def _connect(self) -> _KafkaConnection:
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "acks": "all",
            # The shipper resends what was not acknowledged; the producer's own retries and
            # idempotence would resend on their own and break on a restarted broker's new state.
            "enable.idempotence": False,
            "message.send.max.retries": 0,
            "linger.ms": 2,  # the shipper already gathers a batch
            "batch.size": 1024 * 1024,
            "message.timeout.ms": 15_000,
            "request.timeout.ms": 10_000,
            "socket.timeout.ms": 10_000,
            **self._producer_config,
        }
        return _KafkaConnection(config, self._topics, self._partitions)


class _KafkaConnection:
    """A librdkafka producer (confluent-kafka) plus an admin client that makes sure every topic
    exists before each batch.

    librdkafka rather than kafka-python for producing: kafka-python builds every record in Python
    (partitioner, accumulator, varints), 25-70 us of CPU a record under the service's GIL, which
    alone held feedback ingestion under 20,000 events/s on two cores; librdkafka takes 2-17 us,
    mostly in its own threads (bench/kafka_producers.py). Consumers (trainer, analyses) stay on
    kafka-python.

    Topics are checked per batch (one metadata request for up to thousands of records) because a
    broker that lost its topics, like the memory-backed test broker after a restart, may
    acknowledge writes to a missing topic and drop them; real Kafka refuses them, and then the
    check costs little.
    """

    def __init__(self, config: dict[str, Any], topics: set[str], partitions: int) -> None:
        from confluent_kafka import Producer
        from kafka.admin import KafkaAdminClient

        self._topics = topics
        self._partitions = partitions
        bootstrap = str(config["bootstrap.servers"]).split(",")
        self._admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        self._producer = Producer(config, logger=logging.getLogger("closedloop.eventlog.librdkafka"))

    def before_batch(self, topics: set[str]) -> None:
        # librdkafka asks for the metadata in C; kafka-python's admin (Python) only creates topics.
        wanted = self._topics | topics  # an outbox may hold topics of an earlier configuration
        if not wanted <= self._producer.list_topics(timeout=5).topics.keys():
            create_missing_topics(self._admin, wanted, self._partitions)

    def send(self, topic: str, key: bytes, value: bytes) -> RecordFuture:
        delivery = _Delivery(self._producer)
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=delivery.report)
                return delivery
            except BufferError:  # librdkafka's local queue is full: let it drain a little
                self._producer.poll(0.05)

    def close(self) -> None:
        try:
            self._producer.flush(2)
        finally:
            self._admin.close()


class _Delivery:
    """One record's acknowledgement: librdkafka reports it through a callback run by ``poll``."""

    __slots__ = ("_done", "_error", "_producer")

    def __init__(self, producer: Any) -> None:
        self._producer = producer
        self._done = False
        self._error: Any = None

    def report(self, error: Any, _message: Any) -> None:
        self._done = True
        self._error = error

    def get(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout if timeout is not None else 3600.0)
        while not self._done:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("Kafka did not acknowledge the record in time")
            self._producer.poll(min(remaining, 0.1))
        if self._error is not None:
            from confluent_kafka import KafkaException

            raise KafkaException(self._error)


def create_missing_topics(admin: Any, topics: Iterable[str], partitions: int) -> None:
    """Create those of ``topics`` the broker does not have (a KafkaAdminClient does the work)."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    missing = sorted(set(topics) - set(admin.list_topics()))
    if missing:
        with contextlib.suppress(TopicAlreadyExistsError):
            admin.create_topics(
                [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in missing]
            )


def ensure_topics(bootstrap_servers: str, topics: Iterable[str], *, partitions: int = 3) -> None:
    """Make sure the topics exist, so that consumers can subscribe before the first event."""
    from kafka.admin import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers.split(","), request_timeout_ms=5000)
    try:
        create_missing_topics(admin, topics, partitions)
    finally:
        admin.close()


class FileEventLog:
    """The embedded event log: one segment log per topic under a directory, no broker needed."""

    def __init__(
        self, directory: str | Path, *, fsync_interval: float = 0.1, read_only: bool = False
    ) -> None:
        """``read_only``: read events another process writes (the trainer beside a service)."""
        self.directory = Path(directory)
        self._fsync_interval = fsync_interval
        self._read_only = read_only
        self._topics: dict[str, SegmentLog] = {}
        self._lock = threading.Lock()

    def append(self, topic: str, records: Sequence[KeyedRecord]) -> None:
        self.topic(topic).append(value for _, value in records)

    def read(self, topic: str, start: Position, *, max_records: int = 10_000) -> tuple[list[bytes], Position]:
        return self.topic(topic).read(start, max_records=max_records)

    def sealed_segments(self, topic: str, start: Position) -> list[SealedSegment]:
        """The topic's segments no writer appends to any more, from ``start`` on."""
        return self.topic(topic).sealed_from(start)

    def topic(self, name: str) -> SegmentLog:
        log = self._topics.get(name)
        if log is None:
            with self._lock:
                log = self._topics.get(name)
                if log is None:
                    log = SegmentLog(
                        self.directory / name, fsync_interval=self._fsync_interval, read_only=self._read_only
                    )
                    self._topics[name] = log
        return log

    def stats(self) -> dict[str, Any]:
        return {"backend": "files", "directory": str(self.directory), "topics": sorted(self._topics)}

    def close(self) -> None:
        for log in self._topics.values():
            log.close()
