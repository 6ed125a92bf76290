"""One experiment phase's decisions and outcomes, gathered from the event logs in one streaming pass.

Memory is bounded by design: each decision becomes a few numbers in growing columns (its hashed
id and unit, arm, time, the codes of the breakdown features: about 60 bytes), outcomes are joined
in bulk by sorted hash, and only a bounded uniform sample of whole decisions (the smallest
decision hashes) is kept for off-policy evaluation. Batches of records become columns in
`_log_batches`, in worker processes when the log is long.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from closedloop.contracts import (
    Attribution,
    DecisionEvent,
    EventFormatError,
    ExperimentPhase,
    UseCaseConfig,
    decode_decision,
)

from ._freed_memory import return_freed_memory
from ._hash_sample import HashSample
from ._hashing import id_hashes
from ._log_batches import (
    DecisionBatch,
    DecisionReader,
    Part,
    ReportBatch,
    ReportReader,
    in_order,
    release_workers,
    reports_in_order,
)

OPE_SAMPLE = 50_000


class _Growing:
    """Columns that grow a batch at a time, each in one buffer that doubles when full.

    One buffer per column rather than a list of per-batch arrays: the batches' arrays (160 KB
    each) stayed on the heap for the whole read between the freed record buffers, which glibc
    could then not give back (a 10,000,000-decision report kept ~1 GiB it had freed); a buffer
    that doubles is soon large enough to be mapped on its own and returned whole when freed."""

    def __init__(self, dtypes: Mapping[str, Any]) -> None:
        self._dtypes = dtypes
        self._buffers: dict[str, np.ndarray] = {
            name: np.zeros(0, dtype=dtype) for name, dtype in dtypes.items()
        }
        self._size = 0

    def add(self, columns: Mapping[str, np.ndarray]) -> None:
        added = len(next(iter(columns.values()))) if columns else 0
        needed = self._size + added
        for name, buffer in self._buffers.items():
            if needed > len(buffer):
                grown = np.empty(max(needed, 2 * len(buffer), 4096), dtype=self._dtypes[name])
                grown[: self._size] = buffer[: self._size]
                self._buffers[name] = buffer = grown
            buffer[self._size : needed] = columns[name]
        self._size = needed

    def pop(self, name: str) -> np.ndarray:
        """The column, forgotten here (its memory goes with the caller's last reference)."""
        column = self[name]
        self._buffers[name] = np.zeros(0, dtype=self._dtypes[name])
        return column

    def clear(self) -> None:
        for name in self._buffers:
            self._buffers[name] = np.zeros(0, dtype=self._dtypes[name])
        self._size = 0

    def __getitem__(self, name: str) -> np.ndarray:
        """The column's rows so far (a view of its buffer: valid until the next `add`)."""
        return self._buffers[name][: self._size]


_IDS = np.int64
_DECISIONS = {
    "decision": _IDS,
    "unit": _IDS,
    "arm": np.int16,
    "time": np.float64,
    "active": bool,
    "choice": _IDS,
}
"""``choice``: the hash of the chosen (top) candidate; 0 for binary decisions."""
_PRE_PERIOD = {"unit": _IDS, "decision": _IDS, "time": np.float64, "active": bool, "choice": _IDS}
_REPORTS = {"decision": _IDS, "candidate": _IDS, "outcome": np.int16, "value": np.float64, "time": np.float64}
"""Reported outcomes, one per row: the candidate it names is 0 for none."""


@dataclass
class LoggedDecisions:
    """Columns of one phase's decisions (in the experiment), plus the pre-period's for CUPED."""

    arms: list[str]
    decision: np.ndarray
    unit: np.ndarray
    arm: np.ndarray
    time: np.ndarray
    outcomes: np.ndarray
    """decisions x outcomes, with each outcome's default where no feedback came in its window;
    a ranking's, the sum of its candidates' reports (clicks per ranking)."""
    reported: np.ndarray
    """decisions x outcomes: whether feedback arrived (within the window)."""
    candidate_reports: CandidateReports
    """The counted reports of the decisions, by the candidate they name (for rankings' slots)."""
    breakdowns: dict[str, np.ndarray]
    """Feature -> the value each decision saw (category names, or numbers as floats)."""
    context: np.ndarray
    """decisions x context features, numeric (categories as codes), for the effect models."""
    context_names: list[str]
    pre_unit: np.ndarray
    pre_outcomes: np.ndarray
    sample: list[bytes]
    """Whole decision events: a uniform sample for off-policy evaluation."""
    still_open: int
    """Decisions left out because an outcome window had not closed at the analysis time."""
    inactive: int
    """Decisions left out because they were made with ``activate=false`` and never activated."""
    abandoned: int
    """Decisions left out because the SDK never used their answer (it timed out and fell back)."""
    other_phases: int
    """Decisions of the same experiment in other phases (never mixed in)."""


@dataclass(frozen=True)
class CandidateReports:
    """Counted reports (the first of each decision, outcome and candidate, inside its window)."""

    row: np.ndarray
    """Which decision (its index in `LoggedDecisions`)."""
    candidate: np.ndarray
    """Hash of the candidate named; 0 for the decision's choice (a ranking's top)."""
    outcome: np.ndarray
    value: np.ndarray


class Gatherer:
    """Streams decision and feedback records into `LoggedDecisions` for one experiment phase."""

    def __init__(
        self,
        use_case_name: str,
        use_case: UseCaseConfig,
        phase: ExperimentPhase | None,
        *,
        pre_period_seconds: float | None = None,
        breakdowns: list[str] | None = None,
        ope_sample: int = OPE_SAMPLE,
        since: float | None = None,
    ) -> None:
        """``phase`` None gathers every decision of the use case from ``since`` on, whatever its
        experiment (for off-policy checks outside experiments)."""
        self._arms = [*phase.arms, "holdout"] if phase else []
        breakdowns = breakdowns or []
        self._breakdowns = breakdowns
        self._context_names = list(use_case.context)
        self._categories = {
            name: {v: i for i, v in enumerate(getattr(feature, "values", []) or [])}
            for name, feature in use_case.context.items()
        }
        self._outcomes = list(use_case.outcomes)
        self._in = _Growing(
            {
                **_DECISIONS,
                **{f"breakdown{i}": np.float64 for i in range(len(breakdowns))},
                **{f"context{i}": np.float32 for i in range(len(self._context_names))},
            }
        )
        self._pre = _Growing(_PRE_PERIOD)
        self._activated = _Growing({"decision": _IDS})
        """Hashes of decisions an activation event or a report named (they count)."""
        self._abandoned = _Growing({"decision": _IDS})
        self._sample = HashSample(ope_sample)
        self._reports = _Growing(_REPORTS)
        self.other_phases = 0
        self.unreadable = 0
        """Records skipped because they are not events of a schema this version reads."""
        self._decision_reader = DecisionReader(
            use_case=use_case_name,
            experiment=phase.experiment if phase else None,
            phase=phase.phase if phase else None,
            since=since,
            pre_from=phase.started_at - pre_period_seconds if phase and pre_period_seconds else None,
            phase_start=phase.started_at if phase else math.inf,
            arm_codes={name: i for i, name in enumerate(self._arms)},
            breakdowns=breakdowns,
            context_names=self._context_names,
            categories=self._categories,
        )
        self._report_reader = ReportReader(use_case_name, self._outcomes)
        self._attribution = Attribution.of(use_case)

    def add_decisions(self, records: Iterable[bytes]) -> None:
        """Gather one batch of decision records, in this process."""
        batch = list(records)
        self._add_decision_batch(batch, self._decision_reader.read(batch))

    def add_feedback(self, records: Iterable[bytes]) -> None:
        """Keep the use case's reported outcomes; they are joined to the decisions in `finish`, so
        feedback may be added before its decision. Orphan feedback (its decision was unknown to
        the service when reported) is kept too: the join decides whether its decision is here."""
        self._add_report_batch(self._report_reader.read(list(records)))

    def read_decisions(self, parts: Iterable[Part], *, workers: int | None = None) -> int:
        """Gather a stream of decision batches or sealed log segments; a long one in ``workers``
        processes (`in_order`), kept for `read_feedback`. Returns how many records were read."""
        read = 0
        try:
            for part in in_order(self._decision_reader, parts, workers=workers, bound=self._sample.bound):
                self._add_decision_batch(part.records, part.batch)
                read += part.count
        except BaseException:
            release_workers()
            raise
        return_freed_memory()  # the workers' results, copied into the columns: before the reports
        return read

    def read_feedback(self, parts: Iterable[Part]) -> int:
        """Gather a stream of feedback batches or sealed log segments — the segments in the
        decoding workers if the decisions' read started them — then stop the workers (held
        through the join, they made it a report's peak of memory) and hand the reads' freed
        buffers back to the OS. Returns how many records were read."""
        read = 0
        try:
            for batch, count in reports_in_order(self._report_reader, parts):
                self._add_report_batch(batch)
                read += count
        finally:
            release_workers()
        return_freed_memory()
        return read

    def _add_decision_batch(self, records: list[bytes], batch: DecisionBatch) -> None:
        self.unreadable += batch.unreadable
        self.other_phases += batch.other_phases
        if batch.pre:
            self._pre.add(batch.pre)
        if len(batch.chosen):
            self._in.add(batch.columns)
            self._sample.offer(batch.columns["decision"], records, batch.chosen)

    def _add_report_batch(self, batch: ReportBatch) -> None:
        self.unreadable += batch.unreadable
        self._reports.add(batch.columns)
        self._activated.add({"decision": batch.activated})
        self._abandoned.add({"decision": batch.abandoned})

    def finish(self, *, as_of: float, last: bool = False) -> LoggedDecisions:
        """Join the feedback added so far to the decisions gathered so far and close the windows
        at ``as_of``. Gathering may go on afterwards, for a later `finish`, unless ``last``: then
        the gathered columns are let go as they are used (a one-shot report's peak memory)."""
        columns, pre = self._in, self._pre
        take = columns.pop if last else columns.__getitem__
        decision, times, pre_decision, pre_times = (
            columns["decision"],
            columns["time"],
            pre["decision"],
            pre["time"],
        )
        all_ids = _stacked(decision, pre_decision)
        # One sort of the ids serves every lookup below (each np.isin or np.unique sorted again:
        # most of this step's time at 2,000,000 decisions).
        ids = _SortedIds(all_ids)
        all_times = _stacked(times, pre_times)
        all_choices = _stacked(take("choice"), pre["choice"])
        outcomes, reported, by_candidate = self._join(ids, all_times, all_choices)
        del all_choices
        closed = all_times + self._attribution.longest_window <= as_of
        del all_times
        abandoned = ids.among(self._abandoned["decision"])
        active = _stacked(take("active"), pre["active"])
        counted = (active | ids.among(self._activated["decision"])) & ~abandoned
        del all_ids, active
        # A decision logged twice (a retry after a crash) counts once: its first copy.
        first, pre_first = ids.first_copies(len(decision)), _first_copies(pre_decision)
        in_phase = counted[: len(decision)] & first
        inside = closed[: len(decision)] & in_phase
        pre_inside = closed[len(decision) :] & pre_first & counted[len(decision) :]
        kept_outcomes, kept_reported = outcomes[: len(decision)][inside], reported[: len(decision)][inside]
        pre_outcomes = outcomes[len(decision) :][pre_inside]
        del outcomes, reported  # before the kept columns are copied below
        categories = {name: list(self._categories.get(name, {})) for name in self._breakdowns}
        breakdowns = {
            name: _decode(take(f"breakdown{i}")[inside], categories[name])
            for i, name in enumerate(self._breakdowns)
        }
        context = np.zeros((int(inside.sum()), len(self._context_names)), dtype=np.float32)
        for i in range(len(self._context_names)):
            context[:, i] = take(f"context{i}")[inside]
        sample_hashes, sample_records = self._sample.hashes(), self._sample.records()
        rows = ids.first_row(sample_hashes)
        kept = (rows >= 0) & (rows < len(decision))
        kept[kept] = in_phase[rows[kept]]
        order = np.argsort(sample_hashes, kind="stable")
        sample = [sample_records[i] for i in order.tolist() if kept[i]]
        logged = LoggedDecisions(
            arms=self._arms,
            decision=decision[inside],
            unit=take("unit")[inside],
            arm=take("arm")[inside],
            time=times[inside],
            outcomes=kept_outcomes,
            reported=kept_reported,
            candidate_reports=_kept_reports(
                by_candidate, np.concatenate([inside, np.zeros(len(pre_decision), bool)])
            ),
            breakdowns=breakdowns,
            context=context,
            context_names=self._context_names,
            pre_unit=pre["unit"][pre_inside],
            pre_outcomes=pre_outcomes,
            sample=sample,
            still_open=int((~closed[: len(decision)] & in_phase).sum()),
            inactive=int((first & ~counted[: len(decision)] & ~abandoned[: len(decision)]).sum()),
            abandoned=int((first & abandoned[: len(decision)]).sum()),
            other_phases=self.other_phases,
        )
        if last:
            for growing in (self._in, self._pre, self._reports, self._activated, self._abandoned):
                growing.clear()
            self._sample.clear()
        return_freed_memory()  # the join's working columns
        return logged

    def _join(
        self, ids: _SortedIds, times: np.ndarray, choices: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, CandidateReports]:
        defaults = np.array(list(self._attribution.defaults.values()))
        windows = np.array(list(self._attribution.windows.values()))
        found = self._reports
        if not len(found["decision"]) or not len(times):
            empty = np.zeros(0, dtype=np.int64)
            outcomes = np.tile(defaults, (len(times), 1))
            return (
                outcomes,
                np.zeros(outcomes.shape, dtype=bool),
                CandidateReports(empty, empty, empty, np.zeros(0)),
            )
        # Working arrays are dropped as soon as they are used: a report is ~60 bytes here, and a
        # long log has millions (the join is the report's peak of memory).
        found_rows = ids.first_row(found["decision"])  # a report joins its decision's first copy
        known = found_rows >= 0
        rows = found_rows[known]
        del found_rows
        which = found["outcome"][known]
        delay = found["time"][known] - times[rows]
        in_window = Attribution.counts(delay, windows[which])
        del delay
        known[known] = in_window
        rows, which = rows[in_window], which[in_window]
        del in_window
        values = found["value"][known]
        candidate = found["candidate"][known]
        del known
        candidate[candidate == choices[rows]] = 0  # naming the choice: as naming none
        # The first report of each (decision, outcome, candidate) counts, as in the trainer's join;
        # a decision's outcome is the sum over its candidates (one, but for rankings).
        order = np.lexsort((candidate, which, rows))  # stable: in each group, the first report first
        starts = np.zeros(len(order), dtype=bool)
        starts[:1] = True
        for column in (rows, which, candidate):
            key = column[order]
            starts[1:] |= key[1:] != key[:-1]
            del key
        first = np.sort(order[starts])
        del order, starts
        # Allocated only now, so that they and the reports' working arrays are never all held.
        outcomes = np.tile(defaults, (len(times), 1))
        reported = np.zeros((len(times), len(defaults)), dtype=bool)
        rows, which, values, candidate = rows[first], which[first], values[first], candidate[first]
        reported[rows, which] = True
        outcomes[reported] = 0.0
        np.add.at(outcomes, (rows, which), values)
        return outcomes, reported, CandidateReports(rows, candidate, which, values)


def _stacked(phase: np.ndarray, pre: np.ndarray) -> np.ndarray:
    """A column of the phase's decisions followed by the pre-period's; the phase's own column
    (no copy: 8 bytes a decision at the join's peak) when there is no pre-period."""
    return np.concatenate([phase, pre]) if len(pre) else phase


def _kept_reports(reports: CandidateReports, inside: np.ndarray) -> CandidateReports:
    """The reports of the decisions ``inside`` keeps, their rows renumbered as kept."""
    keep = inside[reports.row] if len(inside) else np.zeros(len(reports.row), dtype=bool)
    renumbered = np.cumsum(inside) - 1
    return CandidateReports(
        renumbered[reports.row[keep]], reports.candidate[keep], reports.outcome[keep], reports.value[keep]
    )


class _SortedIds:
    """Decision ids sorted once (stably: among copies of an id, the first logged comes first)."""

    def __init__(self, ids: np.ndarray) -> None:
        order = np.argsort(ids, kind="stable")
        # Row numbers fit 32 bits below 2**31 rows: 4 bytes a decision less through the join.
        self._order = order.astype(np.int32) if len(ids) < 2**31 else order
        del order
        self._sorted = ids[self._order]

    def first_row(self, wanted: np.ndarray) -> np.ndarray:
        """The row of each wanted id's first copy; -1 for an id not among them."""
        if not len(self._sorted):
            return np.full(len(wanted), -1, dtype=np.int64)
        # Looked up in sorted order: a binary search after the last one touches memory close to
        # it, where random ids each missed the cache all the way down (2.2M reports against 10M
        # decisions: 2.3 s unsorted, 0.25 s sorted, the sort included).
        order = np.argsort(wanted)
        at = np.minimum(np.searchsorted(self._sorted, wanted[order]), len(self._sorted) - 1)
        rows = np.empty(len(wanted), dtype=self._order.dtype)
        rows[order] = np.where(self._sorted[at] == wanted[order], self._order[at], -1)
        return rows

    def among(self, values: np.ndarray, *, chunk: int = 1 << 20) -> np.ndarray:
        """Whether each row's id is one of ``values``: the sorted ids looked up, in order, among
        the values sorted (each of 10M ids looked up at random in 2.2M values took 3.7 s)."""
        found = np.zeros(len(self._sorted), dtype=bool)
        if len(values):
            values = np.sort(values)
            for start in range(0, len(self._sorted), chunk):
                ids = self._sorted[start : start + chunk]
                at = np.minimum(np.searchsorted(values, ids), len(values) - 1)
                found[start : start + chunk] = values[at] == ids
        rows = np.empty(len(found), dtype=bool)
        rows[self._order] = found
        return rows

    def first_copies(self, rows: int) -> np.ndarray:
        """True at the first copy of each id among the first ``rows`` rows."""
        among = self._order < rows
        order, ids = self._order[among], self._sorted[among]
        first = np.zeros(rows, dtype=bool)
        starts = np.ones(len(ids), dtype=bool)
        starts[1:] = ids[1:] != ids[:-1]
        first[order[starts]] = True
        return first


def _first_copies(ids: np.ndarray) -> np.ndarray:
    """True at the first occurrence of each id."""
    first = np.zeros(len(ids), dtype=bool)
    first[np.unique(ids, return_index=True)[1]] = True
    return first


def _decode(codes: np.ndarray, categories: list[str]) -> np.ndarray:
    if not categories:
        return codes
    names = np.array([*categories, "(unknown)"], dtype=object)
    return np.asarray(names[np.where(codes >= 0, codes, len(categories)).astype(int)])


def readable_decision(record: bytes) -> DecisionEvent | None:
    """The decision event, or None for a record this version cannot read."""
    try:
        return decode_decision(record)
    except EventFormatError:
        return None


def sampled_events(data: LoggedDecisions) -> list[tuple[DecisionEvent | None, int | None]]:
    """The off-policy sample decoded, each event with its row in ``data`` (None for a record this
    version cannot read, or a decision not in ``data``: its window is still open)."""
    events = [readable_decision(record) for record in data.sample]
    hashes = id_hashes([event.event_id for event in events if event is not None])
    rows = iter(rows_of(hashes, data.decision).tolist())
    found = [(event, next(rows) if event is not None else -1) for event in events]
    return [(event, row if row >= 0 else None) for event, row in found]


def rows_of(hashes: np.ndarray, decisions: np.ndarray, *, chunk: int = 1 << 20) -> np.ndarray:
    """The row of each of a few decision hashes in the ``decisions`` column (the first, if there
    are several), -1 where absent: the column is looked up in the hashes sorted, a chunk at a
    time, where sorting the column (10 million decisions) cost seconds and a lookup per hash
    as much again."""
    rows = np.full(len(hashes), -1, dtype=np.int64)
    if not len(hashes):
        return rows
    order = np.argsort(hashes, kind="stable")
    wanted = hashes[order]
    first = np.full(len(wanted), -1, dtype=np.int64)  # by sorted hash: its first row
    for start in range(0, len(decisions), chunk):
        part = decisions[start : start + chunk]
        slot = np.minimum(np.searchsorted(wanted, part), len(wanted) - 1)
        found = np.flatnonzero(wanted[slot] == part)
        slots, at = np.unique(slot[found], return_index=True)  # the first of a repeated decision
        unseen = first[slots] < 0
        first[slots[unseen]] = start + found[at[unseen]]
    rows[order] = first[np.searchsorted(wanted, wanted)]  # equal hashes share the leftmost's row
    return rows
