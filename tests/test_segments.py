"""The segment log under the outbox and the embedded event log: nothing skipped, nothing torn."""

from __future__ import annotations

from pathlib import Path

import pytest

from closedloop.eventlog import Position, SegmentLog
from closedloop.eventlog import _segments as segments_module


def _read_all(log: SegmentLog, batch: int) -> list[bytes]:
    records: list[bytes] = []
    position = Position(0, 0)
    while True:
        chunk, position = log.read(position, max_records=batch)
        if not chunk:
            return records
        records.extend(chunk)


@pytest.mark.parametrize("batch", [7, 1000])
def test_reads_every_record_across_segments_larger_than_one_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batch: int
) -> None:
    # One read returns at most _MAX_READ bytes; make segments several reads long.
    monkeypatch.setattr(segments_module, "_MAX_READ", 500)
    log = SegmentLog(tmp_path, segment_bytes=2000, fsync_interval=0)
    written = [f"record-{i:05d}".encode() * 3 for i in range(400)]
    for start in range(0, len(written), 25):
        log.append(written[start : start + 25])
    assert len(log.segments()) > 3
    assert _read_all(log, batch) == written
    log.close()


def test_a_reader_in_another_process_sees_complete_records_only(tmp_path: Path) -> None:
    writer = SegmentLog(tmp_path, fsync_interval=0)
    writer.append([b"one", b"two"])
    with (tmp_path / f"{0:016d}.seg").open("ab") as file:
        file.write(b"\x00\x00\x00\x09")  # the start of a record still being written
    reader = SegmentLog(tmp_path, read_only=True)
    assert _read_all(reader, 10) == [b"one", b"two"]
    with pytest.raises(PermissionError):
        reader.append([b"three"])
    reader.close()
    writer.close()
