"""Outbox slots: several service processes (replicas on one volume, or workers) share one outbox
directory, each writing a slot of its own, and none of them strands what a departed one left.

Slot 0 is the outbox directory itself (the layout of a single service), slot k > 0 is its
``slot-<k>`` subdirectory; each holds ``segments/`` and ``checkpoint.json``. A process takes the
lowest slot whose writer lock is free (the segment log's lock, which dies with its holder). A slot
whose writer is gone but which still holds unshipped events is *stranded*; every running process
looks for those now and then and ships them (see `KafkaEventLog`).
"""

from __future__ import annotations

from pathlib import Path

from ._outbox import Checkpoint
from ._segments import LogInUseError, Position, SegmentLog


def slot_directory(root: Path, slot: int) -> Path:
    return root if slot == 0 else root / f"slot-{slot}"


def claim_slot(root: Path, *, fsync_interval: float) -> tuple[int, SegmentLog]:
    """The lowest free slot under ``root``, with its segment log open for writing (and locked)."""
    slot = 0
    while True:
        try:
            return slot, SegmentLog(slot_directory(root, slot) / "segments", fsync_interval=fsync_interval)
        except LogInUseError:
            slot += 1


def existing_slots(root: Path) -> list[int]:
    slots = [0] if (root / "segments").is_dir() else []
    for path in root.glob("slot-*"):
        suffix = path.name.removeprefix("slot-")
        if suffix.isdigit() and (path / "segments").is_dir():
            slots.append(int(suffix))
    return sorted(slots)


def open_stranded(root: Path, slot: int, *, fsync_interval: float) -> tuple[SegmentLog, Checkpoint] | None:
    """Slot ``slot``'s log, locked for this process, if no other process writes it and it holds
    events not yet acknowledged by Kafka; None otherwise."""
    directory = slot_directory(root, slot)
    if not _has_unshipped(directory):  # the usual case, decided from file sizes without a lock
        return None
    try:
        log = SegmentLog(directory / "segments", fsync_interval=fsync_interval)
    except LogInUseError:
        return None
    checkpoint = Checkpoint(directory / "checkpoint.json")
    if log.end() <= checkpoint.position:
        log.close()
        return None
    return log, checkpoint


def _has_unshipped(directory: Path) -> bool:
    last = max((p for p in (directory / "segments").glob("*.seg")), default=None, key=lambda p: p.name)
    if last is None:
        return False
    shipped_to = Checkpoint(directory / "checkpoint.json").position
    return Position(int(last.stem), last.stat().st_size) > shipped_to
