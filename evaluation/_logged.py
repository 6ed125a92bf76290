"""One experiment phase's decisions and outcomes, gathered from the event logs in one streaming pass.

Memory is bounded by design: each decision becomes a few numbers in growing column buffers (its
hashed id and unit, arm, time, the codes of the breakdown features), outcomes are joined in bulk by
sorted hash, and only a bounded uniform sample of whole decisions (the smallest decision hashes)
is kept for off-policy evaluation.
"""

from __future__ import annotations

import heapq
import math
import string
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from closedloop.contracts import (
    Attribution,
    DecisionEvent,
    DecisionHeader,
    EventFormatError,
    ExperimentPhase,
    UseCaseConfig,
    decode_decision,
    decode_decision_header,
    decode_feedback,
)

OPE_SAMPLE = 50_000


def id_hash(text: str) -> int:
    """A 63-bit hash of an id: joins and unit grouping on integers instead of strings."""
    return int(id_hashes([text])[0])


def id_hashes(texts: Sequence[str]) -> np.ndarray:
    """`id_hash` of each text, for a batch at once: the service's decision ids are random hex
    already (their first 16 digits are the hash); any other id is hashed by pandas' vectorised
    SipHash. Per id in Python, hashing was a fifth of reading a log (``bench/experiment_report.py``)."""
    hashes = np.zeros(len(texts), dtype=np.int64)
    hexlike = [i for i, text in enumerate(texts) if len(text) == 32]
    parsed = _hex_prefixes([texts[i] for i in hexlike])
    other = [i for i, value in zip(hexlike, parsed, strict=True) if value < 0]
    hashes[hexlike] = parsed
    if len(hexlike) < len(texts):
        taken = set(hexlike)
        other += [i for i in range(len(texts)) if i not in taken]
    if other:
        words = pd.util.hash_array(np.array([texts[i] for i in other], dtype=object))
        hashes[other] = (words >> np.uint64(1)).astype(np.int64)
    return hashes


def _hex_prefixes(texts: list[str]) -> np.ndarray:
    """The first 16 hex digits of each text as a 63-bit integer; -1 where they are not all hex."""
    if not texts:
        return np.zeros(0, dtype=np.int64)
    try:
        raw = bytes.fromhex("".join(text[:16] for text in texts))
    except ValueError:
        raw = b""
    if len(raw) == 8 * len(texts):  # fromhex skips spaces: a shorter result means one had some
        return (np.frombuffer(raw, dtype=">u8") >> np.uint64(1)).astype(np.int64)
    return np.array([_hex_prefix(text) for text in texts], dtype=np.int64)


def _hex_prefix(text: str) -> int:
    prefix = text[:16]
    if all(c in string.hexdigits for c in prefix):
        return int(prefix, 16) >> 1
    return -1


@dataclass
class _Columns:
    decision: array[int] = field(default_factory=lambda: array("q"))
    unit: array[int] = field(default_factory=lambda: array("q"))
    arm: array[int] = field(default_factory=lambda: array("h"))
    time: array[float] = field(default_factory=lambda: array("d"))
    active: array[int] = field(default_factory=lambda: array("b"))
    choice: array[int] = field(default_factory=lambda: array("q"))
    """Hash of the chosen (top) candidate; 0 for binary decisions."""
    breakdowns: list[array[float]] = field(default_factory=list)
    context: list[array[float]] = field(default_factory=list)


@dataclass
class _Reports:
    """Reported outcomes: decision hash, outcome index, value, report time and the hash of the
    candidate it names (0 for none), one per row."""

    decision: array[int] = field(default_factory=lambda: array("q"))
    candidate: array[int] = field(default_factory=lambda: array("q"))
    outcome: array[int] = field(default_factory=lambda: array("h"))
    value: array[float] = field(default_factory=lambda: array("d"))
    time: array[float] = field(default_factory=lambda: array("d"))


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
        self._use_case_name = use_case_name
        self._use_case = use_case
        self._phase = phase
        self._since = since
        self._phase_start = phase.started_at if phase else math.inf
        self._arms = [*phase.arms, "holdout"] if phase else []
        self._arm_codes = {name: i for i, name in enumerate(self._arms)}
        self._pre_from = phase.started_at - pre_period_seconds if phase and pre_period_seconds else None
        breakdowns = breakdowns or []
        self._breakdowns = breakdowns
        self._context_names = list(use_case.context)
        self._categories = {
            name: {v: i for i, v in enumerate(getattr(feature, "values", []) or [])}
            for name, feature in use_case.context.items()
        }
        self._outcomes = list(use_case.outcomes)
        self._in = _Columns(
            breakdowns=[array("d") for _ in breakdowns], context=[array("f") for _ in self._context_names]
        )
        self._pre_unit = array("q")
        self._pre_decision = array("q")
        self._pre_time = array("d")
        self._pre_active = array("b")
        self._pre_choice = array("q")
        self._activated = array("q")
        """Hashes of decisions an activation event or a report named (they count)."""
        self._abandoned = array("q")
        self._sample: list[tuple[int, bytes]] = []
        self._sample_size = ope_sample
        self._reports = _Reports()
        self.other_phases = 0
        self.unreadable = 0
        """Records skipped because they are not events of a schema this version reads."""
        self._attribution = Attribution.of(use_case)

    def add_decisions(self, records: Iterable[bytes]) -> None:
        """Gather a batch of decision records: decoded one by one, gathered column by column."""
        batch = list(records)
        events = [self._header(record) for record in batch]
        name = self._use_case_name
        if self._phase is None:
            since = self._since
            chosen = [
                i
                for i, event in enumerate(events)
                if event is not None
                and event.use_case == name
                and (since is None or event.timestamp.timestamp() >= since)
            ]
            self._add_in_phase(events, batch, chosen)
            return
        experiment, number = self._phase.experiment, self._phase.phase
        in_phase: list[int] = []
        other: list[int] = []
        for i, event in enumerate(events):
            if event is None or event.use_case != name:
                continue
            if event.experiment != experiment:
                other.append(i)
            elif event.experiment_phase != number:
                self.other_phases += 1
            else:
                in_phase.append(i)
        self._add_in_phase(events, batch, in_phase)
        if self._pre_from is not None:
            self._add_pre_period([e for i in other if (e := events[i]) is not None])

    def _add_pre_period(self, events: list[DecisionHeader]) -> None:
        """Decisions outside the experiment in the pre-period before its phase (for CUPED)."""
        assert self._pre_from is not None
        times = np.array([event.timestamp.timestamp() for event in events], dtype=np.float64)
        inside = (self._pre_from <= times) & (times < self._phase_start)
        kept = [event for event, keep in zip(events, inside.tolist(), strict=True) if keep]
        _extend(self._pre_unit, id_hashes([event.unit_id for event in kept]))
        _extend(self._pre_decision, id_hashes([event.event_id for event in kept]))
        self._pre_time.extend(times[inside].tolist())
        self._pre_active.extend(event.active for event in kept)
        _extend(self._pre_choice, _candidate_hashes([event.choice for event in kept]))

    def _header(self, record: bytes) -> DecisionHeader | None:
        try:
            return decode_decision_header(record)
        except EventFormatError:
            self.unreadable += 1
            return None

    def _add_in_phase(
        self, events: list[DecisionHeader | None], records: list[bytes], chosen: list[int]
    ) -> None:
        if not chosen:
            return
        columns = self._in
        kept = [e for i in chosen if (e := events[i]) is not None]
        decision = id_hashes([event.event_id for event in kept])
        _extend(columns.decision, decision)
        _extend(columns.unit, id_hashes([event.unit_id for event in kept]))
        codes = self._arm_codes
        columns.arm.extend(codes.get(str(event.arm), -1) for event in kept)
        columns.time.extend(event.timestamp.timestamp() for event in kept)
        columns.active.extend(event.active for event in kept)
        _extend(columns.choice, _candidate_hashes([event.choice for event in kept]))
        for name, into in zip(self._breakdowns, columns.breakdowns, strict=True):
            into.extend(self._code(name, event.context.get(name)) for event in kept)
        for name, into in zip(self._context_names, columns.context, strict=True):
            into.extend(self._code(name, event.context.get(name)) for event in kept)
        self._sample_from(decision, [records[i] for i in chosen])

    def _sample_from(self, decision: np.ndarray, records: list[bytes]) -> None:
        """Keep the smallest decision hashes: a uniform sample that needs no second pass."""
        if self._sample_size <= 0:
            return
        sample = self._sample
        candidates: Iterable[int] = range(len(records))
        if len(sample) >= self._sample_size:  # only hashes below the largest kept can enter
            candidates = np.flatnonzero(decision < -sample[0][0]).tolist()
        for i in candidates:
            value = int(decision[i])
            if len(sample) < self._sample_size:
                heapq.heappush(sample, (-value, records[i]))
            elif -sample[0][0] > value:
                heapq.heapreplace(sample, (-value, records[i]))

    def _code(self, name: str, value: object) -> float:
        categories = self._categories.get(name)
        if categories:
            return float(categories.get(str(value), -1))
        try:
            return float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return math.nan

    def add_feedback(self, records: Iterable[bytes]) -> None:
        """Keep the use case's reported outcomes; they are joined to the decisions in `finish`, so
        feedback may be added before its decision. Orphan feedback (its decision was unknown to
        the service when reported) is kept too: the join decides whether its decision is here."""
        index = {name: i for i, name in enumerate(self._outcomes)}
        events = []
        for record in records:
            try:
                event = decode_feedback(record)
            except EventFormatError:
                self.unreadable += 1
                continue
            if event.use_case == self._use_case_name or event.use_case is None:
                events.append(event)
        decisions = id_hashes([event.decision_id for event in events])
        _extend(self._abandoned, decisions[np.array([e.activation == "abandon" for e in events], dtype=bool)])
        counts = [e.activation == "activate" or (e.activation is None and bool(e.outcomes)) for e in events]
        _extend(self._activated, decisions[np.array(counts, dtype=bool)])
        # One row per reported outcome this use case declares.
        rows = [
            (i, index[name], value)
            for i, e in enumerate(events)
            for name, value in e.outcomes.items()
            if name in index
        ]
        which = np.array([i for i, _, _ in rows], dtype=np.int64)
        reports = self._reports
        _extend(reports.decision, decisions[which])
        _extend(reports.candidate, _candidate_hashes([events[i].candidate_id for i in which.tolist()]))
        reports.outcome.extend(position for _, position, _ in rows)
        reports.value.extend(float(value) for _, _, value in rows)
        reports.time.extend(events[i].timestamp.timestamp() for i in which.tolist())

    def finish(self, *, as_of: float) -> LoggedDecisions:
        """Join the feedback added so far to the decisions gathered so far and close the windows
        at ``as_of``. Gathering may go on afterwards, for a later `finish`."""
        columns = self._in
        decision = np.frombuffer(columns.decision, dtype=np.int64).copy()
        times = np.frombuffer(columns.time, dtype=np.float64).copy()
        pre_decision = np.frombuffer(self._pre_decision, dtype=np.int64).copy()
        pre_times = np.frombuffer(self._pre_time, dtype=np.float64).copy()
        all_ids = np.concatenate([decision, pre_decision])
        all_times = np.concatenate([times, pre_times])
        all_choices = np.concatenate(
            [np.frombuffer(columns.choice, dtype=np.int64), np.frombuffer(self._pre_choice, dtype=np.int64)]
        )
        outcomes, reported, by_candidate = self._join(all_ids, all_times, all_choices)
        closed = all_times + self._attribution.longest_window <= as_of
        abandoned = np.isin(all_ids, np.frombuffer(self._abandoned, dtype=np.int64))
        active = np.concatenate(
            [np.frombuffer(columns.active, dtype=np.int8), np.frombuffer(self._pre_active, dtype=np.int8)]
        ).astype(bool)
        counted = (active | np.isin(all_ids, np.frombuffer(self._activated, dtype=np.int64))) & ~abandoned
        # A decision logged twice (a retry after a crash) counts once: its first copy.
        first, pre_first = _first_copies(decision), _first_copies(pre_decision)
        in_phase = counted[: len(decision)] & first
        inside = closed[: len(decision)] & in_phase
        pre_inside = closed[len(decision) :] & pre_first & counted[len(decision) :]
        categories = {name: list(self._categories.get(name, {})) for name in self._breakdowns}
        breakdowns = {
            name: _decode(np.frombuffer(codes, dtype=np.float64)[inside], categories[name])
            for name, codes in zip(self._breakdowns, columns.breakdowns, strict=True)
        }
        context = (
            np.column_stack([np.frombuffer(c, dtype=np.float32) for c in columns.context])[inside]
            if columns.context
            else np.zeros((int(inside.sum()), 0), dtype=np.float32)
        )
        kept = set(decision[in_phase].tolist())
        sample = [
            record
            for negated, record in sorted(dict(self._sample).items(), key=lambda item: -item[0])
            if -negated in kept
        ]
        return LoggedDecisions(
            arms=self._arms,
            decision=decision[inside],
            unit=np.frombuffer(columns.unit, dtype=np.int64)[inside],
            arm=np.frombuffer(columns.arm, dtype=np.int16)[inside],
            time=times[inside],
            outcomes=outcomes[: len(decision)][inside],
            reported=reported[: len(decision)][inside],
            candidate_reports=_kept_reports(
                by_candidate, np.concatenate([inside, np.zeros(len(pre_decision), bool)])
            ),
            breakdowns=breakdowns,
            context=context,
            context_names=self._context_names,
            pre_unit=np.frombuffer(self._pre_unit, dtype=np.int64)[pre_inside],
            pre_outcomes=outcomes[len(decision) :][pre_inside],
            sample=sample,
            still_open=int((~closed[: len(decision)] & in_phase).sum()),
            inactive=int((first & ~counted[: len(decision)] & ~abandoned[: len(decision)]).sum()),
            abandoned=int((first & abandoned[: len(decision)]).sum()),
            other_phases=self.other_phases,
        )

    def _join(
        self, ids: np.ndarray, times: np.ndarray, choices: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, CandidateReports]:
        defaults = np.array(list(self._attribution.defaults.values()))
        windows = np.array(list(self._attribution.windows.values()))
        outcomes = np.tile(defaults, (len(ids), 1))
        reported = np.zeros((len(ids), len(defaults)), dtype=bool)
        found = self._reports
        if not found.decision or not len(ids):
            empty = np.zeros(0, dtype=np.int64)
            return outcomes, reported, CandidateReports(empty, empty, empty, np.zeros(0))
        order = np.argsort(ids, kind="stable")
        sorted_ids = ids[order]
        fid = np.frombuffer(found.decision, dtype=np.int64)
        slot = np.searchsorted(sorted_ids, fid)
        slot = np.minimum(slot, len(sorted_ids) - 1)
        known = sorted_ids[slot] == fid
        rows = order[slot[known]]
        which = np.frombuffer(found.outcome, dtype=np.int16)[known].astype(np.int64)
        values = np.frombuffer(found.value, dtype=np.float64)[known]
        candidate = np.frombuffer(found.candidate, dtype=np.int64)[known]
        candidate = np.where(candidate == choices[rows], 0, candidate)  # naming the choice: as none
        delay = np.frombuffer(found.time, dtype=np.float64)[known] - times[rows]
        in_window = Attribution.counts(delay, windows[which])
        rows, which, values, candidate = (
            rows[in_window],
            which[in_window],
            values[in_window],
            candidate[in_window],
        )
        # The first report of each (decision, outcome, candidate) counts, as in the trainer's join;
        # a decision's outcome is the sum over its candidates (one, but for rankings).
        _, first = np.unique(np.column_stack([rows, which, candidate]), axis=0, return_index=True)
        first = np.sort(first)
        rows, which, values, candidate = rows[first], which[first], values[first], candidate[first]
        reported[rows, which] = True
        outcomes[reported] = 0.0
        np.add.at(outcomes, (rows, which), values)
        return outcomes, reported, CandidateReports(rows, candidate, which, values)


def _candidate_hashes(candidates: Sequence[str | None]) -> np.ndarray:
    """Hashes of candidate ids, 0 for none (binary decisions, reports naming no candidate).
    Few distinct ids recur: each is hashed once per batch."""
    distinct = sorted({c for c in candidates if c is not None})
    hashes = dict(zip(distinct, id_hashes(distinct).tolist(), strict=True))
    return np.array([0 if c is None else hashes[c] for c in candidates], dtype=np.int64)


def _extend(into: array[int], values: np.ndarray) -> None:
    into.frombytes(values.astype(np.int64).tobytes())


def _kept_reports(reports: CandidateReports, inside: np.ndarray) -> CandidateReports:
    """The reports of the decisions ``inside`` keeps, their rows renumbered as kept."""
    keep = inside[reports.row] if len(inside) else np.zeros(len(reports.row), dtype=bool)
    renumbered = np.cumsum(inside) - 1
    return CandidateReports(
        renumbered[reports.row[keep]], reports.candidate[keep], reports.outcome[keep], reports.value[keep]
    )


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


def row_of(decision: int, sorted_ids: np.ndarray, order: np.ndarray) -> int | None:
    """The row of a decision hash, given the decision column sorted by ``order``; None if absent."""
    slot = int(np.searchsorted(sorted_ids, decision))
    if slot < len(sorted_ids) and sorted_ids[slot] == decision:
        return int(order[slot])
    return None
