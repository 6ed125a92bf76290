"""Joining outcomes to decisions: logged events in, training examples and labels out.

A decision becomes an example: the features of the action it logged, exactly as the policy saw
them; a ranking decided with ``slots`` becomes one example per shown slot, with its slot as a
feature (position bias: see `closedloop.policy.SLOT_FEATURE`). A feedback event labels the example
it is about (a ranking's top slot, or the shown candidate it names) if it happened within the
outcome's window (the first report counts); feedback read before its decision waits in
``cl_pending_reports`` until the decision arrives; feedback about a candidate that was not shown
is counted and dropped. Windows that end without feedback get the outcome's default
(`ExampleStore.close_windows`), so every shown slot without a report is a negative.

Only decisions that count are labelled (the rule is `FeedbackEvent`'s): a decision logged
inactive waits, unlabelled, for an activation event or its first report; an abandoned one is
never labelled. Activations read before their decision wait in ``cl_pending_activations``.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import orjson
from sqlalchemy.engine import Connection

from closedloop.contracts import (
    Attribution,
    ClosedLoopConfig,
    EventFormatError,
    FeatureValue,
    FeedbackEvent,
    TrainingDecision,
    decode_feedback,
    decode_training_decision,
)
from closedloop.policy import FeatureEncoder

from ._feature_blocks import encode_block
from ._store import (
    ExampleStore,
    KnownDecision,
    example_key,
    examples,
    insert_columns_ignoring_duplicates,
    insert_ignoring_duplicates,
    labels,
    pending_activations,
    pending_feedback,
)

logger = logging.getLogger(__name__)
Event = TypeVar("Event", TrainingDecision, FeedbackEvent)
Activations = dict[str, dict[str, float]]
"""decision id -> activation kind ("activate", "abandon") -> when it was logged."""


class _Feedback(NamedTuple):
    feedback_id: str
    decision_id: str
    outcome: str
    value: float
    happened_at: float
    candidate: str | None


_Report = tuple[str, str, str, float, float, str | None]
"""`_Feedback`'s fields: a plain tuple pickles in a fifth of the time of a named one."""

_EXAMPLE_COLUMNS = (
    "decision_id",
    "use_case",
    "decided_at",
    "slot",
    "choice",
    "propensity",
    "policy",
    "arm",
    "model_versions",
    "status",
    "shown",
)
"""The columns of `cl_examples` a batch's decisions fill in (``block`` once the batch's blocks are
stored; ``closed`` and ``features`` are the same for every new example)."""


@dataclass
class PreparedBatch:
    """A batch of events decoded and shaped for storing: everything that needs no database
    (`Joiner.prepare`), so that it can be done elsewhere while the previous batch is stored.

    Column by column and in plain tuples: the worker pickles a batch for the trainer's process,
    which unpickles it, and a dict per example row and an object per report cost both of them
    three to five times more (20,000 rows: 35 -> 11 ms; 10,000 reports: 25 -> 5 ms)."""

    examples: dict[str, list[Any]]
    """`_EXAMPLE_COLUMNS` -> one value per example, in log order."""
    blocks: dict[str, tuple[int, bytes]]
    """use case -> its examples' feature block: how many rows, the encoded block."""
    activations: Activations
    reports: list[_Report]
    """`_Feedback`'s fields, in log order."""
    counts: Counter[str]


class Joiner:
    def __init__(self, config: ClosedLoopConfig, encoders: Mapping[str, FeatureEncoder]) -> None:
        self._encoders = encoders
        self._attribution = {name: Attribution.of(use_case) for name, use_case in config.use_cases.items()}

    def apply(self, connection: Connection, decisions: list[bytes], feedback: list[bytes]) -> Counter[str]:
        """Store a batch of events; returns counts of what happened to them."""
        return self.store(connection, self.prepare(decisions, feedback))

    def prepare(self, decisions: list[bytes], feedback: list[bytes]) -> PreparedBatch:
        """Decode a batch and shape its examples, feature blocks and reports."""
        counts: Counter[str] = Counter()
        rows: list[tuple[Any, ...]] = []
        features: dict[str, list[dict[str, FeatureValue]]] = {}
        for raw in decisions:  # one decoded event alive at a time: a batch of them taxes the GC
            event = _decoded(decode_training_decision, raw, counts)
            if event is not None:
                rows.extend(self._examples(event, counts, features.setdefault(event.use_case, [])))
        columns: dict[str, list[Any]] = {name: [] for name in _EXAMPLE_COLUMNS}
        if rows:  # a tuple per example, turned column-wise at once (in C)
            columns = dict(zip(_EXAMPLE_COLUMNS, map(list, zip(*rows, strict=True)), strict=True))
        activations: Activations = {}
        reports: list[_Report] = []
        for raw in feedback:
            report = _decoded(decode_feedback, raw, counts)
            if report is None:
                continue
            if report.activation is not None:
                kinds = activations.setdefault(report.decision_id, {})
                kinds.setdefault(report.activation, report.timestamp.timestamp())
            else:
                reports.extend(self._feedback(report, counts))
        return PreparedBatch(columns, self._blocks(columns, features), activations, reports, counts)

    def store(self, connection: Connection, batch: PreparedBatch) -> Counter[str]:
        """Store a prepared batch in the connection's transaction; returns what happened to it."""
        counts, columns = batch.counts, batch.examples
        stored = len(columns["decision_id"])
        blocks = {
            use_case: ExampleStore.add_feature_block(connection, use_case, count, data)
            for use_case, (count, data) in batch.blocks.items()
        }
        new_examples = {
            **columns,
            "block": [blocks[use_case] for use_case in columns["use_case"]],
            "closed": [False] * stored,
            "features": [""] * stored,  # in the batch's feature block
        }
        inserted = insert_columns_ignoring_duplicates(connection, examples, new_examples)
        tops = [i for i, slot in enumerate(columns["slot"]) if slot == 0]
        arrived = [columns["decision_id"][i] for i in tops]
        # Every example new (the usual): what the batch's reports and activations need to know
        # of these decisions is in hand, not in the database (a lookup cost a tenth of the join).
        fresh = _FreshDecisions(
            new_examples, dict(zip(arrived, tops, strict=True)) if inserted == stored else {}
        )
        counts["decisions"] += len(tops)
        counts["examples"] += stored
        counts["decisions_inactive"] += sum(columns["status"][i] == "inactive" for i in tops)
        # Activations and early feedback from earlier batches whose decision arrived now, before
        # this batch's: the first report in log order is the one that counts.
        activations = ExampleStore.take_pending_activations(connection, arrived)
        for decision_id, kinds in batch.activations.items():
            earlier = activations.setdefault(decision_id, {})
            for kind, at in kinds.items():
                earlier.setdefault(kind, at)
        reports = [
            _Feedback(
                p["feedback_id"], p["decision_id"], p["outcome"], p["value"], p["happened_at"], p["candidate"]
            )
            for p in ExampleStore.take_pending(connection, arrived)
        ]
        reports.extend(map(_Feedback._make, batch.reports))
        self._activate(connection, activations, counts, fresh)
        fresh.forget(activations)  # their status is the database's now
        self._label(connection, reports, counts, fresh)
        return counts

    @staticmethod
    def _activate(
        connection: Connection,
        kinds: Activations,
        counts: Counter[str],
        fresh: _FreshDecisions,
    ) -> None:
        """Apply activations and abandonments; those of decisions not read yet wait for them."""
        if not kinds:
            return
        known = _known(connection, kinds, fresh)
        abandoned = [d for d, k in kinds.items() if d in known and "abandon" in k]
        activated = [
            d for d, k in kinds.items() if d in known and "abandon" not in k and known[d].status == "inactive"
        ]
        ExampleStore.abandon(connection, [key for d in abandoned for key in known[d].examples(d)])
        ExampleStore.activate(connection, [key for d in activated for key in known[d].examples(d)])
        counts["decisions_abandoned"] += sum(known[d].status != "abandoned" for d in abandoned)
        counts["decisions_activated"] += len(activated)
        waiting = [
            {"decision_id": d, "kind": kind, "happened_at": at}
            for d, k in kinds.items()
            if d not in known
            for kind, at in k.items()
        ]
        insert_ignoring_duplicates(connection, pending_activations, waiting)
        counts["activations_waiting"] += len(waiting)

    def _blocks(
        self, columns: Mapping[str, list[Any]], features: dict[str, list[dict[str, FeatureValue]]]
    ) -> dict[str, tuple[int, bytes]]:
        """One feature block per use case of the batch, its rows in the order of the examples."""
        blocks: dict[str, tuple[int, bytes]] = {}
        for use_case, logged in features.items():
            if logged:
                keys = [
                    key
                    for key, of_use_case in zip(columns["decision_id"], columns["use_case"], strict=True)
                    if of_use_case == use_case
                ]
                categorical = frozenset(self._encoders[use_case].categorical_features)
                blocks[use_case] = (len(keys), encode_block(keys, logged, categorical=categorical))
        return blocks

    def _examples(
        self, event: TrainingDecision, counts: Counter[str], features: list[dict[str, FeatureValue]]
    ) -> list[tuple[Any, ...]]:
        """The decision's examples, each a row of `_EXAMPLE_COLUMNS` (their features appended to
        ``features``): its logged action, or each shown slot of a ranking."""
        encoder = self._encoders.get(event.use_case)
        if encoder is None:
            counts["decisions_of_unknown_use_case"] += 1
            return []
        decided_at = event.timestamp.timestamp()
        model_versions = orjson.dumps(event.model_versions).decode()
        status = "active" if event.active else "inactive"
        if not event.slots:
            features.append(
                encoder.logged_example(event.context, event.shown_features(event.choice), event.choice)
            )
            return [
                (
                    event.event_id,
                    event.use_case,
                    decided_at,
                    0,
                    event.choice,
                    event.propensity,
                    event.policy,
                    event.arm,
                    model_versions,
                    status,
                    None,
                )
            ]
        # the top slot's row of a ranking decided with slots keeps its shown candidates
        shown = orjson.dumps([slot.candidate for slot in event.slots]).decode()
        rows = []
        for k, slot in enumerate(event.slots):
            candidate = event.shown_features(slot.candidate)
            features.append(encoder.logged_example(event.context, candidate, None, slot=k))
            rows.append(
                (
                    example_key(event.event_id, k),
                    event.use_case,
                    decided_at,
                    k,
                    slot.candidate,
                    slot.propensity,
                    event.policy,
                    event.arm,
                    model_versions,
                    status,
                    shown if k == 0 else None,
                )
            )
        return rows

    @staticmethod
    def _feedback(event: FeedbackEvent, counts: Counter[str]) -> list[_Report]:
        """The event's reports, one per outcome, as `_Feedback`'s fields."""
        counts["feedback_events"] += 1
        happened_at = event.timestamp.timestamp()
        return [
            (event.event_id, event.decision_id, outcome, float(value), happened_at, event.candidate_id)
            for outcome, value in event.outcomes.items()
        ]

    def _label(
        self,
        connection: Connection,
        reports: list[_Feedback],
        counts: Counter[str],
        fresh: _FreshDecisions,
    ) -> None:
        if not reports:
            return
        ids = [r.decision_id for r in reports]
        known = _known(connection, ids, fresh)
        labelled = ExampleStore.existing_labels(  # a decision stored by this batch has none yet
            connection,
            [key for i in set(ids) if i in known and i not in fresh for key in known[i].examples(i)],
        )
        activated: set[str] = set()
        # Early reports wait for their decision, every distinct one (which of them counts depends
        # on the decision's time); the same report redelivered is a duplicate.
        already_waiting = ExampleStore.pending_keys(connection, [i for i in ids if i not in known])
        new_labels: list[dict[str, Any]] = []
        waiting: list[dict[str, Any]] = []
        for report in reports:
            decision = known.get(report.decision_id)
            if decision is None:
                waiting_key = (report.decision_id, report.outcome, report.feedback_id)
                if waiting_key in already_waiting:
                    counts["feedback_duplicate"] += 1
                    continue
                already_waiting.add(waiting_key)
                waiting.append(
                    {
                        "decision_id": report.decision_id,
                        "outcome": report.outcome,
                        "value": report.value,
                        "feedback_id": report.feedback_id,
                        "happened_at": report.happened_at,
                        "candidate": report.candidate,
                    }
                )
                continue
            use_case, decided_at = decision.use_case, decision.decided_at
            if decision.status == "abandoned":
                counts["feedback_for_abandoned"] += 1
                continue
            slot = decision.slot_of(report.candidate)
            if slot is None:  # nothing unshown is learned from
                counts["feedback_unshown_candidate"] += 1
                continue
            if decision.status == "inactive":  # its first report activates it, whatever it says
                activated.add(report.decision_id)
            attribution = self._attribution.get(use_case)
            window = attribution.windows.get(report.outcome) if attribution else None
            key = (example_key(report.decision_id, slot), report.outcome)
            if window is None:
                counts["feedback_unknown_outcome"] += 1
            elif not Attribution.counts(report.happened_at - decided_at, window):
                counts["feedback_after_window"] += 1
            elif key in labelled:
                counts["feedback_duplicate"] += 1
            else:
                labelled.add(key)
                new_labels.append(
                    {
                        "decision_id": key[0],
                        "outcome": report.outcome,
                        "use_case": use_case,
                        "value": report.value,
                        "source": "feedback",
                        "feedback_id": report.feedback_id,
                        "labelled_at": report.happened_at,
                        "decided_at": decided_at,
                        "block": decision.block,
                    }
                )
        insert_ignoring_duplicates(connection, labels, new_labels)
        insert_ignoring_duplicates(connection, pending_feedback, waiting)
        ExampleStore.activate(connection, [key for d in sorted(activated) for key in known[d].examples(d)])
        counts["decisions_activated"] += len(activated)
        counts["feedback_joined"] += len(new_labels)
        counts["feedback_waiting"] += len(waiting)


class _FreshDecisions:
    """The decisions a batch stored (every example of it new), by id: their top slot's example in
    the batch's columns."""

    def __init__(self, columns: Mapping[str, list[Any]], top_examples: dict[str, int]) -> None:
        self._columns = columns
        self._top_examples = top_examples

    def __contains__(self, decision_id: object) -> bool:
        return decision_id in self._top_examples

    def forget(self, decision_ids: Iterable[str]) -> None:
        for decision_id in decision_ids:
            self._top_examples.pop(decision_id, None)

    def decision(self, decision_id: str) -> KnownDecision:
        index = self._top_examples[decision_id]
        return KnownDecision.of({name: self._columns[name][index] for name in KnownDecision.COLUMNS})


def _known(
    connection: Connection, decision_ids: Iterable[str], fresh: _FreshDecisions
) -> dict[str, KnownDecision]:
    """The stored decisions among ``decision_ids``: those of ``fresh`` from the batch's columns,
    the others looked up."""
    asked = set(decision_ids)
    known = {i: fresh.decision(i) for i in asked if i in fresh}
    known.update(ExampleStore.known_decisions(connection, asked - known.keys()))
    return known


def _decoded(decode: Callable[[bytes], Event], raw: bytes, counts: Counter[str]) -> Event | None:
    """The decoded event, or None (counted as ``unreadable_events``) for a record of another shape."""
    try:
        return decode(raw)
    except EventFormatError as exc:
        counts["unreadable_events"] += 1
        logger.error("skipping a logged record: %s", exc)
        return None
