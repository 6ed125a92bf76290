"""One experiment phase's decisions and outcomes, gathered from the event logs in one streaming pass.

Memory is bounded by design: each decision becomes a few numbers in growing column buffers (its
hashed id and unit, arm, time, the codes of the breakdown features), outcomes are joined in bulk by
sorted hash, and only a bounded uniform sample of whole decisions (the smallest decision hashes)
is kept for off-policy evaluation.
"""

from __future__ import annotations

import hashlib
import heapq
import math
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

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
    if len(text) == 32:
        try:
            return int(text[:16], 16) >> 1  # the service's decision ids are already random hex
        except ValueError:
            pass
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") >> 1


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
        if self._phase is None:
            self._add_all(records)
            return
        name, experiment, number = self._use_case_name, self._phase.experiment, self._phase.phase
        for record in records:
            event = self._header(record)
            if event is None or event.use_case != name:
                continue
            if event.experiment == experiment:
                if event.experiment_phase != number:
                    self.other_phases += 1
                    continue
                self._add_in_phase(event, record)
            elif self._pre_from is not None:
                at = event.timestamp.timestamp()
                if self._pre_from <= at < self._phase_start:
                    self._pre_unit.append(id_hash(event.unit_id))
                    self._pre_decision.append(id_hash(event.event_id))
                    self._pre_time.append(at)
                    self._pre_active.append(event.active)
                    self._pre_choice.append(_candidate_hash(event.choice))

    def _add_all(self, records: Iterable[bytes]) -> None:
        for record in records:
            event = self._header(record)
            if event is None or event.use_case != self._use_case_name:
                continue
            if self._since is None or event.timestamp.timestamp() >= self._since:
                self._add_in_phase(event, record)

    def _header(self, record: bytes) -> DecisionHeader | None:
        try:
            return decode_decision_header(record)
        except EventFormatError:
            self.unreadable += 1
            return None

    def _add_in_phase(self, event: DecisionHeader, record: bytes) -> None:
        columns = self._in
        decision = id_hash(event.event_id)
        columns.decision.append(decision)
        columns.unit.append(id_hash(event.unit_id))
        columns.arm.append(self._arm_codes.get(str(event.arm), -1))
        columns.time.append(event.timestamp.timestamp())
        columns.active.append(event.active)
        columns.choice.append(_candidate_hash(event.choice))
        context = event.context
        for name, into in zip(self._breakdowns, columns.breakdowns, strict=True):
            into.append(self._code(name, context.get(name)))
        for name, into in zip(self._context_names, columns.context, strict=True):
            into.append(self._code(name, context.get(name)))
        # Keep the smallest decision hashes: a uniform sample that needs no second pass.
        if len(self._sample) < self._sample_size:
            heapq.heappush(self._sample, (-decision, record))
        elif self._sample and -self._sample[0][0] > decision:
            heapq.heapreplace(self._sample, (-decision, record))

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
        reports = self._reports
        for record in records:
            try:
                event = decode_feedback(record)
            except EventFormatError:
                self.unreadable += 1
                continue
            if event.use_case != self._use_case_name and event.use_case is not None:
                continue
            decision = id_hash(event.decision_id)
            if event.activation == "abandon":
                self._abandoned.append(decision)
            elif event.activation == "activate" or event.outcomes:
                self._activated.append(decision)
            at = event.timestamp.timestamp()
            for name, value in event.outcomes.items():
                position = index.get(name)
                if position is not None:
                    reports.decision.append(decision)
                    reports.candidate.append(_candidate_hash(event.candidate_id))
                    reports.outcome.append(position)
                    reports.value.append(float(value))
                    reports.time.append(at)

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


def _candidate_hash(candidate: str | None) -> int:
    return 0 if candidate is None else id_hash(candidate)


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
