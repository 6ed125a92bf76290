"""Logged records to compact columns, a batch at a time, in this process or in worker processes.

Decoding is most of what reading a large log costs (a decision's JSON, ~1 KB, in msgspec; a few
µs on this project's machine), and it is independent batch by batch: a reader here is a small
picklable description of what to keep, `read` turns one batch of records into numpy columns,
and `in_order` runs it over a stream of parts in worker processes once the stream turns out to
be long (or is known to be: the embedded log's sealed segments ahead are large), handing the
results back in log order (the gatherer keeps the first copy of a decision logged twice, so
order matters). A sealed segment goes to a worker as its path (`SealedSegment`): the worker reads
and decodes it and sends back columns, not records. A short read stays in this process: starting
workers costs more than it saves under a million records. The workers start in the background
half way there, read the reports' segments too (`reports_in_order`), and `release_workers` stops
them, with their fork server, once a report has read its logs.
"""

from __future__ import annotations

import math
import multiprocessing
import multiprocessing.forkserver
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np

from closedloop.contracts import (
    FEEDBACK_DECODER,
    DecisionHeader,
    FeedbackEvent,
    decision_header_decoder,
)
from closedloop.eventlog import SealedSegment
from closedloop.metadata import exit_with, freeze_startup_objects

from ._hashing import candidate_hashes, id_hashes

PARALLEL_AFTER = 1_000_000
"""Records read in this process before the rest of a stream goes to worker processes: starting
them costs seconds, worth it only for long reads."""
PARALLEL_AFTER_BYTES = 256 * 2**20
"""Sealed log segments of at least this many bytes ahead: a read long enough for workers from
the start (a quarter of a million decisions of ~1 KB; the log's size is known before reading)."""
Columns = dict[str, np.ndarray]


@dataclass
class DecisionBatch:
    """What one batch of decision records adds: the phase's decisions and the pre-period's."""

    columns: Columns
    """decision, unit, arm, time, active, choice, ``breakdown<i>``, ``context<i>``."""
    chosen: np.ndarray
    """Which records of the batch the columns are (for the off-policy sample)."""
    pre: Columns
    """unit, decision, time, active, choice of decisions in the pre-period (CUPED)."""
    other_phases: int = 0
    unreadable: int = 0

    @classmethod
    def joined(cls, batches: list[DecisionBatch], reader: DecisionReader) -> DecisionBatch:
        """One batch of several read in turn (their ``chosen`` already numbered as one)."""
        if not batches:
            return reader.read([])
        pre_keys = [key for key in batches[0].pre]
        return cls(
            {key: np.concatenate([b.columns[key] for b in batches]) for key in batches[0].columns},
            np.concatenate([b.chosen for b in batches]),
            {key: np.concatenate([b.pre[key] for b in batches]) for key in pre_keys},
            sum(b.other_phases for b in batches),
            sum(b.unreadable for b in batches),
        )


@dataclass
class ReportBatch:
    """What one batch of feedback records adds."""

    columns: Columns
    """decision, candidate, outcome, value, time: one row per reported outcome."""
    activated: np.ndarray
    abandoned: np.ndarray
    unreadable: int = 0

    @classmethod
    def joined(cls, batches: list[ReportBatch], reader: ReportReader) -> ReportBatch:
        """One batch of several read in turn."""
        if not batches:
            return reader.read([])
        return cls(
            {key: np.concatenate([b.columns[key] for b in batches]) for key in batches[0].columns},
            np.concatenate([b.activated for b in batches]),
            np.concatenate([b.abandoned for b in batches]),
            sum(b.unreadable for b in batches),
        )


@dataclass(frozen=True)
class DecisionReader:
    """Which decisions to keep: the use case's, in the experiment's phase (``experiment`` None:
    every decision since ``since``), and those before the phase in the pre-period."""

    use_case: str
    experiment: str | None
    phase: int | None
    since: float | None
    pre_from: float | None
    phase_start: float
    arm_codes: dict[str, int]
    breakdowns: list[str]
    context_names: list[str]
    categories: dict[str, dict[str, int]] = field(default_factory=dict)

    def read(self, records: Sequence[bytes]) -> DecisionBatch:
        decode = decision_header_decoder(tuple(sorted({*self.breakdowns, *self.context_names})))
        events = decode.readable(records)
        unreadable = sum(event is None for event in events)
        if self.experiment is None:
            since = self.since
            chosen = [
                i
                for i, event in enumerate(events)
                if event is not None
                and event.use_case == self.use_case
                and (since is None or event.timestamp.timestamp() >= since)
            ]
            return DecisionBatch(self._phase_columns(events, chosen), np.array(chosen), {}, 0, unreadable)
        in_phase: list[int] = []
        outside: list[DecisionHeader] = []
        other_phases = 0
        for i, event in enumerate(events):
            if event is None or event.use_case != self.use_case:
                continue
            if event.experiment != self.experiment:
                outside.append(event)
            elif event.experiment_phase != self.phase:
                other_phases += 1
            else:
                in_phase.append(i)
        pre = self._pre_period(outside) if self.pre_from is not None else {}
        return DecisionBatch(
            self._phase_columns(events, in_phase), np.array(in_phase), pre, other_phases, unreadable
        )

    def _phase_columns(self, events: list[DecisionHeader | None], chosen: list[int]) -> Columns:
        kept = [event for i in chosen if (event := events[i]) is not None]
        codes = self.arm_codes
        columns = {
            "decision": id_hashes([event.event_id for event in kept]),
            "unit": id_hashes([event.unit_id for event in kept]),
            "arm": np.array([codes.get(str(event.arm), -1) for event in kept], dtype=np.int16),
            "time": np.array([event.timestamp.timestamp() for event in kept], dtype=np.float64),
            "active": np.array([event.active for event in kept], dtype=bool),
            "choice": candidate_hashes([event.choice for event in kept]),
        }
        coded: dict[str, np.ndarray] = {}
        for name in {*self.breakdowns, *self.context_names}:
            coded[name] = self._coded(name, [event.feature(name) for event in kept])
        for i, name in enumerate(self.breakdowns):
            columns[f"breakdown{i}"] = coded[name]
        for i, name in enumerate(self.context_names):
            columns[f"context{i}"] = coded[name].astype(np.float32)
        return columns

    def _pre_period(self, events: list[DecisionHeader]) -> Columns:
        times = np.array([event.timestamp.timestamp() for event in events], dtype=np.float64)
        assert self.pre_from is not None
        inside = (self.pre_from <= times) & (times < self.phase_start)
        kept = [event for event, keep in zip(events, inside.tolist(), strict=True) if keep]
        return {
            "unit": id_hashes([event.unit_id for event in kept]),
            "decision": id_hashes([event.event_id for event in kept]),
            "time": times[inside],
            "active": np.array([event.active for event in kept], dtype=bool),
            "choice": candidate_hashes([event.choice for event in kept]),
        }

    def _coded(self, name: str, values: list[object]) -> np.ndarray:
        """The feature's values as numbers (`_code`), a column at a time: one call per value took
        a fifth of a worker's time."""
        categories = self.categories.get(name)
        if categories:
            code = categories.get
            return np.array([code(str(value), -1) for value in values], dtype=np.float64)
        try:  # numbers, None as NaN, number strings parsed: what float() and _code give them
            return np.array(values, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            return np.array([self._code(name, value) for value in values], dtype=np.float64)

    def _code(self, name: str, value: object) -> float:
        categories = self.categories.get(name)
        if categories:
            return float(categories.get(str(value), -1))
        try:
            return float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return math.nan


@dataclass(frozen=True)
class ReportReader:
    """The use case's reports (and those naming no use case), their outcomes by index."""

    use_case: str
    outcomes: list[str]

    def read(self, records: Sequence[bytes]) -> ReportBatch:
        parsed = FEEDBACK_DECODER.readable(records)
        events: list[FeedbackEvent] = [
            e for e in parsed if e is not None and (e.use_case == self.use_case or e.use_case is None)
        ]
        index = {name: i for i, name in enumerate(self.outcomes)}
        decisions = id_hashes([event.decision_id for event in events])
        abandoned = np.array([e.activation == "abandon" for e in events], dtype=bool)
        # An activation counts the decision, and so does any report of an outcome.
        counts = np.array(
            [e.activation == "activate" or (e.activation is None and bool(e.outcomes)) for e in events],
            dtype=bool,
        )
        rows = [
            (i, index[name], value)
            for i, event in enumerate(events)
            for name, value in event.outcomes.items()
            if name in index
        ]
        which = np.array([i for i, _, _ in rows], dtype=np.int64)
        columns = {
            "decision": decisions[which],
            "candidate": candidate_hashes([events[i].candidate_id for i in which.tolist()]),
            "outcome": np.array([position for _, position, _ in rows], dtype=np.int16),
            "value": np.array([float(value) for _, _, value in rows], dtype=np.float64),
            "time": np.array([events[i].timestamp.timestamp() for i in which.tolist()], dtype=np.float64),
        }
        return ReportBatch(columns, decisions[counts], decisions[abandoned], len(parsed) - len(events))


_POOLS: dict[int, ProcessPoolExecutor] = {}


def _pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes, started on first use and kept until `release_workers`."""
    if workers not in _POOLS:
        # forkserver: a console reads in a process with threads, which fork would copy mid-state.
        # The server imports this module once and the workers it forks share those pages (each
        # worker importing them again held ~140 MB of its own).
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])
        _POOLS[workers] = ProcessPoolExecutor(
            max_workers=workers, mp_context=context, initializer=_start_worker, initargs=(os.getpid(),)
        )
    return _POOLS[workers]


def _start_worker(parent: int) -> None:
    exit_with(parent)
    freeze_startup_objects()  # what the fork server imported: out of every collection's way


def _ready() -> None:
    """A worker's first task: by the time it runs, the worker has imported what it needs."""


def _warm(workers: int) -> None:
    pool = _pool(workers)
    for _ in range(workers):
        pool.submit(_ready)


def release_workers() -> None:
    """Stop the decoding processes and their fork server (a report calls it when it has read its
    logs): the server holds the imported modules its workers shared, ~250 MB once they are gone."""
    if not _POOLS:
        return
    while _POOLS:
        _, pool = _POOLS.popitem()
        pool.shutdown(wait=True, cancel_futures=True)
    # The standard library has no public way to stop its fork server; the next pool starts another.
    stop = getattr(multiprocessing.forkserver._forkserver, "_stop", None)
    if stop is not None:
        stop()


Part = list[bytes] | SealedSegment
"""A part of the decision log: records in hand, or a sealed segment file to read whole."""


@dataclass
class ReadPart:
    """One part of the log read and decoded."""

    records: list[bytes]
    """The records the off-policy sample may take (``batch.chosen`` indexes them): all of a part
    read here; of a segment read by a worker, those of the decisions under the sample's bound."""
    batch: DecisionBatch
    count: int
    """How many records the part held."""


def _batches_here(part: Part) -> Iterable[list[bytes]]:
    """A part read in this process: a sealed segment a read (16 MB) at a time, as the records of
    the active segment come in batches; never a whole 64 MB segment's records and events at once."""
    return part.chunks() if isinstance(part, SealedSegment) else [part]


def _read_sealed(reader: DecisionReader, segment: SealedSegment, bound: int | None) -> ReadPart:
    """In a worker: a whole segment read and decoded a chunk at a time (a 64 MB segment's records
    and events held at once cost a worker ~150 MB more), sending back the records of only the
    decisions the sample may still take (hashes under ``bound``; None: all)."""
    batches: list[DecisionBatch] = []
    sampled: list[bytes] = []
    count = 0
    for records in segment.chunks():
        batch = reader.read(records)
        hashes = batch.columns["decision"]
        wanted = np.arange(len(hashes)) if bound is None else np.flatnonzero(hashes < bound)
        which = np.full(len(hashes), -1, dtype=np.int64)
        which[wanted] = len(sampled) + np.arange(len(wanted))
        sampled.extend(records[i] for i in batch.chosen[wanted].tolist())
        batch.chosen = which
        batches.append(batch)
        count += len(records)
    return ReadPart(sampled, DecisionBatch.joined(batches, reader), count)


class _Flight:
    """Tasks in worker processes, a bounded number in flight, results in order; each task's
    result comes with what the sender kept of it."""

    def __init__(self, workers: int) -> None:
        self._workers = workers
        self._pool = _pool(workers)
        self._limit = 2 * workers
        self._tasks: deque[tuple[Any, Future[Any]]] = deque()

    def put(self, kept: Any, task: Callable[..., Any], *args: Any) -> Iterator[tuple[Any, Any]]:
        """Send a task; yields the results that must be taken to keep the flight bounded."""
        self._tasks.append((kept, self._pool.submit(task, *args)))
        while len(self._tasks) > self._limit:
            yield self._take()

    def drain(self) -> Iterator[tuple[Any, Any]]:
        while self._tasks:
            yield self._take()

    def _take(self) -> tuple[Any, Any]:
        kept, future = self._tasks.popleft()
        try:
            return kept, future.result()
        except BrokenProcessPool:  # a worker died (killed, out of memory): the next read starts anew
            _POOLS.pop(self._workers, None)
            raise

    def close(self) -> None:
        for _, future in self._tasks:
            future.cancel()
        self._tasks.clear()


def _read_part(reader: DecisionReader, flight: _Flight, part: Part, bound: int | None) -> Iterator[ReadPart]:
    """Send a part to the workers: a sealed segment to read whole, or records in hand (which stay
    here: only their columns come back); yields the parts read that the flight gives back."""
    if isinstance(part, SealedSegment):
        sent = flight.put(None, _read_sealed, reader, part, bound)
    else:
        sent = flight.put(part, reader.read, part)
    yield from (_read_result(kept, result) for kept, result in sent)


def _read_result(kept: list[bytes] | None, result: Any) -> ReadPart:
    return result if kept is None else ReadPart(kept, result, len(kept))


def in_order(
    reader: DecisionReader,
    parts: Iterable[Part],
    *,
    workers: int | None = None,
    bound: Callable[[], int | None] = lambda: None,
) -> Iterator[ReadPart]:
    """Each part read and decoded, in order: in this process until `PARALLEL_AFTER` records have
    been read (or not at all when the sealed segments ahead hold `PARALLEL_AFTER_BYTES`), then in
    ``workers`` processes (by default one per core, at most 4; 1: never), which read sealed
    segments themselves. ``bound``: the largest decision hash the off-policy
    sample may still take (None: any), asked as each part is sent."""
    workers = workers if workers is not None else min(os.cpu_count() or 1, 4)
    parallel_after = PARALLEL_AFTER
    seen = 0
    flight: _Flight | None = None
    sealed, parts = _sealed_ahead(parts)
    if workers > 1 and sealed >= PARALLEL_AFTER_BYTES:  # a long log's size is known: no need to wait
        flight = _Flight(workers)
    try:
        for part in parts:
            if flight is None and (workers < 2 or seen < parallel_after):
                for records in _batches_here(part):
                    if workers > 1 and seen < parallel_after // 2 <= seen + len(records):
                        _warm(workers)
                    seen += len(records)
                    yield ReadPart(records, reader.read(records), len(records))
                continue
            flight = flight or _Flight(workers)
            yield from _read_part(reader, flight, part, bound())
        if flight is not None:
            yield from (_read_result(kept, result) for kept, result in flight.drain())
    finally:
        if flight is not None:
            flight.close()


def _sealed_ahead(parts: Iterable[Part]) -> tuple[int, Iterator[Part]]:
    """The bytes of the sealed segments at the front of ``parts``, and the parts (unchanged)."""
    front: list[Part] = []
    rest = iter(parts)
    for part in rest:
        front.append(part)
        if not isinstance(part, SealedSegment):
            break
    return sum(part.size for part in front if isinstance(part, SealedSegment)), chain(front, rest)


def reports_in_order(reader: ReportReader, parts: Iterable[Part]) -> Iterator[tuple[ReportBatch, int]]:
    """Each part's reports and how many records it held, in order: sealed segments in the
    decoding workers if a decisions' read left them running, everything else in this process."""
    workers = next(iter(_POOLS), None)
    flight = _Flight(workers) if workers is not None else None
    try:
        for part in parts:
            if flight is not None and isinstance(part, SealedSegment):
                yield from (result for _, result in flight.put(None, _read_reports, reader, part))
                continue
            if flight is not None:  # the records in hand come after what is in flight
                yield from (result for _, result in flight.drain())
            yield from ((reader.read(records), len(records)) for records in _batches_here(part))
        if flight is not None:
            yield from (result for _, result in flight.drain())
    finally:
        if flight is not None:
            flight.close()


def _read_reports(reader: ReportReader, segment: SealedSegment) -> tuple[ReportBatch, int]:
    """In a worker: a whole segment's reports, read and decoded 4 MB at a time (while the
    workers read reports, the report's process holds every decision's columns: the workers'
    memory is the read's peak)."""
    batches, count = [], 0
    for records in segment.chunks(max_bytes=4 * 2**20):
        batches.append(reader.read(records))
        count += len(records)
    return ReportBatch.joined(batches, reader), count
