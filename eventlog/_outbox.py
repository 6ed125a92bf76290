"""The durable outbox in front of Kafka: events are on local disk before the service acknowledges them.

A shipper thread sends what the outbox holds to Kafka, waits for the broker's acknowledgement of
every record, and only then moves its checkpoint. While the broker is down the outbox grows and
decisions keep being served; when it returns, the shipper resends exactly the records that were not
acknowledged. Across a crash of the service itself, records acknowledged by Kafka after the last
checkpoint may be sent again: consumers drop repeats by ``event_id``.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from ._segments import Position, SegmentLog

logger = logging.getLogger(__name__)

_PREFIX = struct.Struct(">BH")


class RecordFuture(Protocol):
    def get(self, timeout: float | None = None) -> Any: ...


class Connection(Protocol):
    """A live link to the broker, made by the shipper's factory and remade after any failure."""

    def before_batch(self, topics: set[str]) -> None:
        """Make sure the batch's topics exist."""
        ...

    def send(self, topic: str, key: bytes, value: bytes) -> RecordFuture: ...

    def close(self) -> None: ...


def encode_record(topic: str, key: str, value: bytes) -> bytes:
    topic_bytes, key_bytes = topic.encode(), key.encode()
    return _PREFIX.pack(len(topic_bytes), len(key_bytes)) + topic_bytes + key_bytes + value


def decode_record(payload: bytes) -> tuple[str, bytes, bytes]:
    topic_length, key_length = _PREFIX.unpack_from(payload)
    start = _PREFIX.size
    topic = payload[start : start + topic_length].decode()
    key = payload[start + topic_length : start + topic_length + key_length]
    return topic, key, payload[start + topic_length + key_length :]


class Checkpoint:
    """The outbox position up to which every record is acknowledged by Kafka, kept in a file.

    ``position`` moves with every acknowledged batch; the file follows at most ``save_interval``
    seconds behind (and at once when a segment is finished, before it is deleted, and on stop):
    writing it per batch cost a fifth of the shipper's time under load. A crash resends at most
    that interval's acknowledged records, which consumers drop by ``event_id``."""

    def __init__(self, path: Path, *, save_interval: float = 0.2) -> None:
        self.path = path
        self.save_interval = save_interval
        if path.exists():
            data = json.loads(path.read_text())
            self.position = Position(int(data["segment"]), int(data["offset"]))
        else:
            self.position = Position(0, 0)
        self._saved = self.position
        self._saved_at = time.monotonic()

    def advance(self, position: Position, *, save_now: bool = False) -> None:
        self.position = position
        if save_now or time.monotonic() - self._saved_at >= self.save_interval:
            self.save()

    def save(self) -> None:
        """Write the position to the file, if it moved since the last write."""
        if self.position == self._saved:
            return
        position = self.position
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps({"segment": position.segment, "offset": position.offset}))
        os.replace(temporary, self.path)
        self._saved, self._saved_at = position, time.monotonic()


class Shipper:
    """Moves outbox records to Kafka in order, never losing one and never resending an acked one."""

    def __init__(
        self,
        outbox: SegmentLog,
        connect: Callable[[], Connection],
        *,
        checkpoint: Checkpoint,
        batch_records: int = 5000,
        ack_timeout: float = 15.0,
        max_backoff: float = 2.0,
        gather_seconds: float = 0.025,
    ) -> None:
        self._outbox = outbox
        self._connect = connect
        self._checkpoint = checkpoint
        self._batch_records = batch_records
        self._ack_timeout = ack_timeout
        self._max_backoff = max_backoff
        self._gather_seconds = gather_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox-shipper", daemon=True)
        self.delivered = 0
        self.failures = 0
        self.connected = False

    def start(self) -> None:
        self._thread.start()

    def stop(self, *, drain_timeout: float = 5.0) -> None:
        deadline = time.monotonic() + drain_timeout
        while self.backlog() and self.connected and time.monotonic() < deadline:
            time.sleep(0.02)
        self._stop.set()
        self._thread.join(timeout=self._ack_timeout + 5)

    def backlog(self) -> bool:
        return self._outbox.end() > self._checkpoint.position

    def _run(self) -> None:
        connection: Connection | None = None
        acked: set[int] = set()
        backoff = 0.05
        while not self._stop.is_set():
            records, after = self._outbox.read(self._checkpoint.position, max_records=self._batch_records)
            if not records:
                self._outbox.wait_for_append(self._checkpoint.position, timeout=0.2)
                continue
            if len(records) < self._batch_records and not self._stop.is_set():
                # Let a trickle of events gather for a moment, so that a busy service sends few
                # large batches instead of one request (and one topic check) per decision.
                self._stop.wait(self._gather_seconds)
                more, after = self._outbox.read(after, max_records=self._batch_records - len(records))
                records += more  # read on from where the first read ended: each frame checked once
            try:
                if connection is None:
                    connection = self._connect()
                    self.connected = True
                decoded = [decode_record(r) for r in records]
                connection.before_batch({topic for topic, _, _ in decoded})
                self._send_batch(connection, decoded, acked)
            except Exception as exc:  # the broker, the network or the producer: retry all the same
                logger.warning("cannot reach Kafka yet (%s); %d events wait in the outbox", exc, len(records))
                self.failures += 1
                self.connected = False
                if connection is not None:
                    _close_quietly(connection)
                    connection = None
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self._max_backoff)
                continue
            if len(acked) == len(records):
                finished_segment = after.segment > self._checkpoint.position.segment
                self._checkpoint.advance(after, save_now=finished_segment)
                if finished_segment:  # listing the directory per batch would cost more than the batch
                    self._outbox.delete_before(after)
                self.delivered += len(records)
                acked = set()
                backoff = 0.05
        self._checkpoint.save()
        if connection is not None:
            _close_quietly(connection)

    def _send_batch(
        self, connection: Connection, records: Sequence[tuple[str, bytes, bytes]], acked: set[int]
    ) -> None:
        """Send what is not yet acked; add each acknowledged index to ``acked``; raise on any failure."""
        pending = [(index, connection.send(*r)) for index, r in enumerate(records) if index not in acked]
        error: Exception | None = None
        for index, future in pending:
            try:
                future.get(timeout=self._ack_timeout)
                acked.add(index)
            except Exception as exc:  # kept: every other future still has to be read
                error = exc
        if error is not None:
            raise error


def _close_quietly(connection: Connection) -> None:
    try:
        connection.close()
    except Exception:  # closing a broken connection may fail too; it is dropped either way
        logger.debug("closing the Kafka connection failed", exc_info=True)
