"""The segment log under the outbox and the embedded event log: nothing skipped, nothing torn."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import threading
import zlib
from pathlib import Path

import pytest

from closedloop.contracts import ClosedLoopError, ConfigError
from closedloop.eventlog import Position, SealedSegment, SegmentLog
from closedloop.eventlog import _segments as segments_module

_HEADER_SIZE = 8  # a frame's length and CRC-32


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


def test_appends_and_rolls_do_not_wait_for_the_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A request appends its event while an fsync is in flight, even the append that rolls the
    segment; the synced data is complete once the disk answers."""
    log = SegmentLog(tmp_path, segment_bytes=1000, fsync_interval=3600)  # no timer sync in the test
    log.append([b"first"])
    in_fsync, disk_answers = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        in_fsync.set()
        assert disk_answers.wait(10)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", slow_fsync)
    syncing = threading.Thread(target=log.flush)
    syncing.start()
    assert in_fsync.wait(10)
    appending = threading.Thread(target=lambda: [log.append([b"x" * 400]) for _ in range(5)])
    appending.start()
    appending.join(timeout=10)
    assert not appending.is_alive(), "an append waited for an fsync"
    assert len(log.segments()) > 1  # the appends rolled at least once, with the disk still busy
    disk_answers.set()
    syncing.join(timeout=10)
    log.close()
    assert _read_all(log, 100) == [b"first"] + [b"x" * 400] * 5


def test_one_writer_per_log_and_the_error_names_the_holder(tmp_path: Path) -> None:
    """A second service or demo on the same data_dir is refused before it writes a byte."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from closedloop.eventlog import SegmentLog\n"
            "log = SegmentLog(sys.argv[1])\n"
            "print('writing', flush=True)\n"
            "time.sleep(600)\n",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "writing"
        with pytest.raises(ConfigError, match=f"process {holder.pid}") as refused:
            SegmentLog(tmp_path)
        assert refused.value.field == "data_dir"
        reader = SegmentLog(tmp_path, read_only=True)  # the trainer reads beside a running service
        assert reader.read(Position(0, 0)) == ([], Position(0, 0))
    finally:
        holder.kill()
        holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()
    log = SegmentLog(tmp_path)  # the killed writer's lock went with it
    log.append([b"mine"])
    log.close()
    again = SegmentLog(tmp_path)  # and a closed writer's lock with its close
    assert _read_all(again, 10) == [b"mine"]
    again.close()


def test_frames_carry_zlib_s_crc_32_so_logs_of_earlier_versions_read_on(tmp_path: Path) -> None:
    """The checksum is computed by zlib-ng; files written before (by zlib) and after must agree."""
    earlier = [os.urandom(size) for size in (0, 1, 13_000)]
    frames = b"".join(struct.pack(">II", len(p), zlib.crc32(p)) + p for p in earlier)
    (tmp_path / f"{0:016d}.seg").write_bytes(frames)  # as an earlier version wrote it
    log = SegmentLog(tmp_path, fsync_interval=0)
    log.append([b"now"])
    assert _read_all(log, 10) == [*earlier, b"now"]
    log.close()
    tail = (tmp_path / f"{0:016d}.seg").read_bytes()[len(frames) :]
    assert tail == struct.pack(">II", 3, zlib.crc32(b"now")) + b"now"


@pytest.mark.parametrize("max_bytes", [50, 700, None])
def test_a_sealed_segment_reads_whole_in_chunks_even_records_longer_than_one(
    tmp_path: Path, max_bytes: int | None
) -> None:
    """A sealed segment read a chunk at a time (`SealedSegment.chunks`): every record in order,
    a record longer than one chunk read whole; the active segment is not among the sealed."""
    log = SegmentLog(tmp_path, segment_bytes=2000, fsync_interval=0)
    written = [bytes([65 + i % 26]) * (10 + (i * 37) % 300) for i in range(60)]
    for record in written:
        log.append([record])
    sealed = log.sealed_from(Position(0, 0))
    assert len(sealed) == len(log.segments()) - 1 >= 3
    read = [record for segment in sealed for chunk in segment.chunks(max_bytes=max_bytes) for record in chunk]
    active, _ = log.read(Position(log.segments()[-1], 0), max_records=1000)
    assert read + active == written
    middle = sealed[1]
    [first, *_] = next(SealedSegment(middle.path, middle.number).chunks(max_bytes=max_bytes))
    assert first == written[len([r for s in sealed[:1] for r in s.read()])]
    log.close()


@pytest.mark.parametrize("read_only", [False, True])
def test_a_read_until_a_position_takes_the_records_that_end_by_it(
    tmp_path: Path, read_only: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the trainer reads feedback with: as far through its log as the decisions are through
    theirs (`share_before`, `position_at`), never a record that ends past the bound, on any
    segment, and on to the end once the bound is the end."""
    monkeypatch.setattr(segments_module, "_MAX_READ", 500)  # segments several reads long
    writer = SegmentLog(tmp_path, segment_bytes=2000, fsync_interval=0)
    written = [f"record-{i:04d}".encode() * (1 + i % 5) for i in range(300)]
    for start in range(0, len(written), 10):
        writer.append(written[start : start + 10])
    log = SegmentLog(tmp_path, read_only=True) if read_only else writer
    assert len(log.segments()) > 5
    assert log.share_before(Position(0, 0)) == 0.0
    assert log.share_before(log.position_at(1.0)) == 1.0
    ends = []  # every record's end position
    record, position = log.read(Position(0, 0), max_records=1)
    while record:
        ends.append(position)
        record, position = log.read(position, max_records=1)
    total = sum((tmp_path / name).stat().st_size for name in os.listdir(tmp_path) if name.endswith(".seg"))
    for share in [0.0, 0.013, 0.25, 0.5, 0.61, 0.999, 1.0]:
        until = log.position_at(share)
        assert abs(log.share_before(until) - share) * total < 1  # to the byte
        taken, position = log.read(Position(0, 0), max_records=1000, until=until)
        whole = sum(end <= until for end in ends)  # the records that end by the bound
        if until.segment < log.segments()[-1]:  # in sealed segments: one call, however many reads
            assert taken == written[:whole]
        while True:  # the active segment goes a read at a time
            chunk, position = log.read(position, max_records=1000, until=until)
            if not chunk:
                break
            taken.extend(chunk)
        assert taken == written[:whole]
    if read_only:
        log.close()
    writer.close()


@pytest.mark.parametrize("max_records", [1, 7, 1000])
def test_records_found_are_those_a_read_returns_and_any_process_reads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, max_records: int
) -> None:
    """`find` walks the frames as `read` does without copying them out: the same count and end
    from every start, within sealed segments several reads long, up to any bound, and stopping at
    a record that fails its checksum; the slice found reads back to exactly those records."""
    monkeypatch.setattr(segments_module, "_MAX_READ", 500)
    log = SegmentLog(tmp_path, segment_bytes=2000, fsync_interval=0)
    for start in range(0, 300, 25):
        log.append([f"record-{i:05d}".encode() * 3 for i in range(start, start + 25)])
    sealed = log.segments()[1]
    frame = _HEADER_SIZE + len(b"record-00000" * 3)
    with log._path(sealed).open("r+b") as file:  # the third record: one byte flipped
        file.seek(2 * frame + _HEADER_SIZE)
        file.write(b"R")
    for until in (None, log.position_at(0.3), log.position_at(0.8)):
        position = Position(0, 0)
        while True:
            records, end = log.read(position, max_records=max_records, until=until)
            found = log.find(position, max_records=max_records, until=until)
            assert (found.start, found.end, found.count) == (position, end, len(records))
            assert found.read() == records
            if not records:
                break
            position = end
        stopped_at = Position(sealed, 2 * frame)
        assert position == stopped_at or (until is not None and position < stopped_at)
    log.close()


def test_a_slice_ending_where_a_segment_begins_reads_back(tmp_path: Path) -> None:
    """A walk bounded by the start of a segment ends there, past the end of the one before: the
    slice reads its records back all the same (and an empty one reads none)."""
    log = SegmentLog(tmp_path, segment_bytes=200, fsync_interval=0)
    for i in range(20):
        log.append([f"record-{i:05d}".encode() * 3])
    second = log.segments()[1]
    found = log.find(Position(0, 0), max_records=1000, until=Position(second, 0))
    assert found.end == Position(second, 0)
    records, _ = log.read(Position(0, 0), max_records=1000, until=Position(second, 0))
    assert found.read() == records
    assert len(records) == found.count > 0
    empty = log.find(found.end, max_records=1000, until=found.end)
    assert empty.count == 0
    assert empty.read() == []
    log.close()


def test_a_slice_whose_segment_is_gone_says_so(tmp_path: Path) -> None:
    log = SegmentLog(tmp_path, segment_bytes=200, fsync_interval=0)
    for i in range(20):
        log.append([f"record-{i:05d}".encode() * 3])
    found = log.find(Position(0, 0), max_records=1000)
    assert found.count == 20
    log._path(log.segments()[0]).unlink()
    with pytest.raises(ClosedLoopError, match="not the 20"):
        found.read()
    log.close()
