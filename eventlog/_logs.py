"""The decision and feedback logs: Kafka behind a durable outbox, or segment files when embedded."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from closedloop.eventlog._outbox import Checkpoint, RecordFuture, Shipper, encode_record
from closedloop.eventlog._segments import Position, SegmentLog

logger = logging.getLogger(__name__)

KeyedRecord = tuple[str, bytes]


class EventLog(Protocol):
    def append(self, topic: str, records: Sequence[KeyedRecord]) -> None:
        """Durably record ``(key, value)`` pairs; once this returns they will reach the log."""
        ...

    def stats(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class KafkaEventLog:
    """Events go to a local outbox first and are shipped to Kafka by a background thread."""

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
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self._topics = set(topics)
        self._partitions = partitions
        self._producer_config = producer_config or {}
        self._outbox = SegmentLog(Path(outbox_dir) / "segments", fsync_interval=fsync_interval)
        self._shipper = Shipper(
            self._outbox,
            self._connect,
            checkpoint=Checkpoint(Path(outbox_dir) / "checkpoint.json"),
            ack_timeout=ack_timeout,
        )
        self._shipper.start()

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
        self._shipper.stop()
        self._outbox.close()

    def _connect(self) -> _KafkaConnection:
        config: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "acks": "all",
            # The shipper retries what was not acknowledged; the producer's own retries and
            # idempotence would resend on its own and break on a restarted broker's new state.
            "enable_idempotence": False,
            "retries": 0,
            "linger_ms": 0,  # the shipper already gathers a batch
            "batch_size": 512 * 1024,
            "max_block_ms": 5000,
            "request_timeout_ms": 10_000,
            "delivery_timeout_ms": 15_000,
            "max_in_flight_requests_per_connection": 1,
            **self._producer_config,
        }
        return _KafkaConnection(config, self._topics, self._partitions)


class _KafkaConnection:
    """A producer plus an admin client that makes sure every topic exists before each batch.

    Checked per batch (one metadata request for up to thousands of records) because a broker that
    lost its topics, like the memory-backed test broker after a restart, may acknowledge writes
    to a missing topic and drop them; real Kafka refuses them, and then the check costs little.
    """

    def __init__(self, config: dict[str, Any], topics: set[str], partitions: int) -> None:
        from kafka import KafkaProducer
        from kafka.admin import KafkaAdminClient

        self._topics = topics
        self._partitions = partitions
        self._admin = KafkaAdminClient(bootstrap_servers=config["bootstrap_servers"], request_timeout_ms=5000)
        self._producer = KafkaProducer(**config)

    def before_batch(self) -> None:
        create_missing_topics(self._admin, self._topics, self._partitions)

    def send(self, topic: str, key: bytes, value: bytes) -> RecordFuture:
        future: RecordFuture = self._producer.send(topic, key=key, value=value)
        return future

    def close(self) -> None:
        try:
            self._producer.close(timeout=2)
        finally:
            self._admin.close()


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
