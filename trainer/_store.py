"""Training examples, their labels and the consumed offsets, in one SQL database (SQLAlchemy Core).

An example is one shown action: a decision's choice, or one shown slot of a ranking decided with
``slots`` (keyed by `example_key`: the decision id for the top slot). Everything a batch of
events changes — new examples, joined labels, early feedback waiting for its decision, and the
source offsets the batch ends at — is written in one transaction. A trainer that
is killed mid-batch therefore restarts from the last committed offsets with exactly the labels
those offsets account for: nothing lost, nothing counted twice. Labels are keyed by
(example, outcome), so a redelivered feedback event cannot add a second label either.

Times are stored as epoch seconds (floats): the same in SQLite and PostgreSQL, and cheap to compare.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, ClassVar

import numpy as np
import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from closedloop.contracts import Attribution, ConfigError
from closedloop.metadata import open_database

from ._feature_blocks import BlockRows, decode_block, take_rows

metadata = sa.MetaData()

examples = sa.Table(
    "cl_examples",
    metadata,
    # The example key (`example_key`): the decision id, with "#<slot>" for a ranking's lower slots.
    sa.Column("decision_id", sa.String(128), primary_key=True),
    sa.Column("use_case", sa.String(64), nullable=False),
    sa.Column("decided_at", sa.Float, nullable=False),
    # The logged features as JSON, for rows stored before feature blocks; "" for rows whose
    # features are in their ``block`` (cl_feature_blocks).
    sa.Column("features", sa.Text, nullable=False),
    sa.Column("choice", sa.String(256)),
    sa.Column("propensity", sa.Float, nullable=False),
    sa.Column("policy", sa.String(16), nullable=False),
    sa.Column("arm", sa.String(64)),
    sa.Column("model_versions", sa.Text, nullable=False),
    sa.Column("closed", sa.Boolean, nullable=False, default=False),
    # active; inactive: made with activate=false, not activated yet (no labels, no defaults);
    # abandoned: the SDK never used its answer (never labelled, whatever comes)
    sa.Column("status", sa.String(16), nullable=False, server_default="active"),
    sa.Column("slot", sa.Integer, nullable=False, server_default="0"),
    # The top slot's row of a ranking decided with slots: its shown candidates, top first (JSON).
    sa.Column("shown", sa.Text),
    sa.Column("block", sa.Integer),
    # Of every use case: the console's recent traffic, the newest decision, exports in time order.
    sa.Index("ix_cl_examples_decided", "decided_at"),
)
_UNCLOSED = examples.c.closed.is_(False)
# Only the examples whose windows are still open: closing a window takes a row out of this index
# (moving it within an index of every row cost the closing of 1M windows 1.5 s of 2.7), and the
# index stays the size of the open windows, not of the history. (No other index may begin with
# use_case and decided_at: SQLite, without statistics, took one such for closing windows.)
sa.Index(
    "ix_cl_examples_unclosed",
    examples.c.use_case,
    examples.c.decided_at,
    sqlite_where=_UNCLOSED,
    postgresql_where=_UNCLOSED,
)

labels = sa.Table(
    "cl_labels",
    metadata,
    sa.Column("decision_id", sa.String(128), primary_key=True),  # the example key
    sa.Column("outcome", sa.String(64), primary_key=True),
    sa.Column("use_case", sa.String(64), nullable=False),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("feedback_id", sa.String(128)),
    sa.Column("labelled_at", sa.Float, nullable=False),
    # The example's decision time and feature block, copied from its row: a retrain reads and
    # counts its final labels by a range of this table's index alone (joined to cl_examples and
    # sorted, the read was most of a retrain's own time at 1M rows: bench/trainer_throughput.py).
    sa.Column("decided_at", sa.Float, nullable=False),
    sa.Column("block", sa.Integer),
    sa.Index("ix_cl_labels_time", "use_case", "outcome", "decided_at"),
)

feature_blocks = sa.Table(
    "cl_feature_blocks",
    metadata,
    # The features of one stored batch's examples of a use case, column-wise (`_feature_blocks`).
    sa.Column("block_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("use_case", sa.String(64), nullable=False),
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("data", sa.LargeBinary, nullable=False),
)

pending_feedback = sa.Table(
    "cl_pending_reports",
    metadata,
    # Every distinct report waits, in log order: which one counts (the first inside its window)
    # is known only once the decision's time is.
    sa.Column("arrival", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("decision_id", sa.String(128), nullable=False),
    sa.Column("outcome", sa.String(64), nullable=False),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("feedback_id", sa.String(128), nullable=False),
    sa.Column("happened_at", sa.Float, nullable=False),
    sa.Column("candidate", sa.String(256)),
    sa.UniqueConstraint("decision_id", "outcome", "feedback_id", name="uq_cl_pending_reports"),
)
pending_activations = sa.Table(
    "cl_pending_activations",
    metadata,
    # Activations and abandonments read before their decision (which may never come).
    sa.Column("decision_id", sa.String(128), primary_key=True),
    sa.Column("kind", sa.String(16), primary_key=True),
    sa.Column("happened_at", sa.Float, nullable=False),
)

_OLD_PENDING = "cl_pending_feedback"
"""Until 0.1: one waiting report per (decision, outcome); its rows move to cl_pending_reports."""

offsets = sa.Table(
    "cl_offsets",
    metadata,
    sa.Column("source", sa.String(128), primary_key=True),
    sa.Column("topic", sa.String(256), primary_key=True),
    sa.Column("partition", sa.Integer, primary_key=True),
    sa.Column("next_offset", sa.BigInteger, nullable=False),
)

# Every decision of the use case made before ``closed_before`` has its final label for the outcome.
window_marks = sa.Table(
    "cl_window_marks",
    metadata,
    sa.Column("use_case", sa.String(64), primary_key=True),
    sa.Column("outcome", sa.String(64), primary_key=True),
    sa.Column("closed_before", sa.Float, nullable=False),
)

counters = sa.Table(
    "cl_trainer_counters",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)

runs = sa.Table(
    "cl_training_runs",
    metadata,
    sa.Column("run_id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("use_case", sa.String(64), nullable=False),
    sa.Column("outcome", sa.String(64), nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float, nullable=False),
    sa.Column("labels_seen", sa.BigInteger, nullable=False),
    sa.Column("promoted", sa.Boolean, nullable=False),
    sa.Column("version", sa.String(32)),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("report", sa.Text, nullable=False),
    sa.Index("ix_cl_training_runs_use_case", "use_case", "outcome", "run_id"),
)

SourceOffsets = dict[tuple[str, int], int]
"""(topic, partition) -> the next offset to read."""
StartOffsets = dict[tuple[str, int], int | None]
"""(topic, partition) -> the next offset the database held when a batch was read (None: none)."""


class OffsetsMoved(Exception):
    """Another trainer stored offsets of a partition this batch read: the partition was given to
    it while this batch was on its way (a rebalance), so the batch is dropped, not stored twice."""


@dataclass(frozen=True)
class LabelledRows:
    """Examples with their label for one outcome, oldest first, column by column."""

    decided_at: np.ndarray
    values: np.ndarray
    features: dict[str, np.ndarray]
    """Feature name -> the logged values (see `_feature_blocks.take_rows`)."""

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class TrainingRun:
    run_id: int
    use_case: str
    outcome: str
    started_at: float
    finished_at: float
    labels_seen: int
    promoted: bool
    version: str | None
    reason: str
    report: dict[str, Any]


def _insert(connection: Connection, table: sa.Table) -> Any:
    """The dialect's INSERT, which offers ON CONFLICT in both SQLite and PostgreSQL."""
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    if connection.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(table)
    raise ConfigError(
        f"The metadata database {connection.dialect.name!r} is not supported.",
        hint="Use SQLite (the default) or PostgreSQL (postgresql+psycopg://...).",
    )


def insert_ignoring_duplicates(
    connection: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]]
) -> int:
    """Insert, skipping rows whose key exists (the table's unique constraint, or its primary key);
    returns how many were inserted (both drivers sum an executemany's row counts).

    The statement is compiled once per table and columns and the rows go to the driver's
    executemany as they are: SQLAlchemy's per-row parameter processing took half of every
    insert's time in the trainer's join (bench/trainer_throughput.py). The values are plain
    strings, numbers, booleans and None, which both drivers take without processing."""
    if not rows:
        return 0
    sql, names = _compiled_insert(connection, table, tuple(rows[0]))
    if names is None:  # a named paramstyle (psycopg's): the rows themselves
        result = connection.exec_driver_sql(sql, [dict(row) for row in rows])
    else:
        # itemgetter of several names makes each row's tuple in C (of one name, the bare value)
        values = list(map(itemgetter(*names), rows)) if len(names) > 1 else [(row[names[0]],) for row in rows]
        result = connection.exec_driver_sql(sql, values)
    return int(result.rowcount)


def insert_columns_ignoring_duplicates(
    connection: Connection, table: sa.Table, columns: Mapping[str, Sequence[Any]]
) -> int:
    """`insert_ignoring_duplicates` of rows given column by column (column name -> one value per
    row, every column as long): each row's parameters are zipped from the columns in C."""
    if not columns or not len(next(iter(columns.values()))):
        return 0
    names = tuple(columns)
    sql, order = _compiled_insert(connection, table, names)
    if order is None:  # a named paramstyle (psycopg's): a dict per row
        rows: list[Any] = [
            dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)
        ]
    else:
        rows = list(zip(*(columns[name] for name in order), strict=True))
    return int(connection.exec_driver_sql(sql, rows).rowcount)


_COMPILED: dict[tuple[str, str, tuple[str, ...]], tuple[str, tuple[str, ...] | None]] = {}


def _compiled_insert(
    connection: Connection, table: sa.Table, columns: tuple[str, ...]
) -> tuple[str, tuple[str, ...] | None]:
    """The INSERT ... ON CONFLICT DO NOTHING of ``columns`` as the driver's SQL, and the order of
    its positional parameters (None for named ones)."""
    key = (connection.dialect.name, table.name, columns)
    if key not in _COMPILED:
        unique = [c for c in table.constraints if isinstance(c, sa.UniqueConstraint)]
        conflict = unique[0].columns if unique else table.primary_key.columns
        statement = _insert(connection, table).on_conflict_do_nothing(
            index_elements=[c.name for c in conflict]
        )
        compiled = statement.compile(dialect=connection.dialect, column_keys=list(columns))
        order = tuple(compiled.positiontup) if compiled.positiontup is not None else None
        _COMPILED[key] = (str(compiled), order)
    return _COMPILED[key]


def _chunks(items: Sequence[str], size: int = 900) -> Iterator[Sequence[str]]:
    # SQLite limits the number of bound parameters of one statement.
    for start in range(0, len(items), size):
        yield items[start : start + size]


_IN_SIZE = 900
_COMPILED_IN: dict[tuple[str, str], tuple[str, tuple[str, ...] | None, dict[str, Any]]] = {}


def _select_in(
    connection: Connection, name: str, query: sa.Select[Any], column: sa.Column[Any], keys: Iterable[str]
) -> Iterator[Sequence[sa.Row[Any]]]:
    """The rows of ``query`` whose ``column`` is one of ``keys``, a chunk of keys at a time.

    The statement (named ``name``) is compiled once with ``_IN_SIZE`` placeholders and goes to the
    driver as it is, the last chunk padded with a repeated key: SQLAlchemy renders an IN list's
    900 parameters anew on every execution, which took a tenth of the join's time
    (bench/trainer_throughput.py)."""
    key = (connection.dialect.name, name)
    if key not in _COMPILED_IN:
        placeholder: sa.BindParameter[Any] = sa.bindparam("keys", value=[""] * _IN_SIZE, expanding=True)
        compiled = query.where(column.in_(placeholder)).compile(
            dialect=connection.dialect, compile_kwargs={"render_postcompile": True}
        )
        order = tuple(compiled.positiontup) if compiled.positiontup is not None else None
        _COMPILED_IN[key] = (str(compiled), order, dict(compiled.params))
    sql, order, fixed = _COMPILED_IN[key]
    for chunk in _chunks(sorted(set(keys)), _IN_SIZE):
        padded = [*chunk, *[chunk[0]] * (_IN_SIZE - len(chunk))]
        values = {**fixed, **{f"keys_{i + 1}": value for i, value in enumerate(padded)}}
        parameters = values if order is None else tuple(values[name] for name in order)
        yield list(connection.exec_driver_sql(sql, parameters))


def _waiting_among(connection: Connection, table: sa.Table, decision_ids: Iterable[str]) -> set[str]:
    """The ids among ``decision_ids`` that wait in ``table``. Usually few wait, or none: when
    fewer rows wait than ids are asked about, the waiting ids are read whole instead."""
    asked = set(decision_ids)
    waiting = connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
    if waiting == 0:
        return set()
    if waiting < len(asked):
        return asked & {row[0] for row in connection.execute(sa.select(table.c.decision_id))}
    return asked


def example_key(decision_id: str, slot: int) -> str:
    """The example of a decision's shown slot: the decision id for the top (or only) one."""
    return decision_id if slot == 0 else f"{decision_id}#{slot}"


@dataclass(frozen=True)
class KnownDecision:
    use_case: str
    decided_at: float
    status: str
    choice: str | None
    shown: tuple[str, ...] | None = None
    """A ranking decided with slots: its shown candidates, top first; None: only the choice."""
    block: int | None = None
    """The feature block of its examples (every slot's: they were stored in one batch)."""

    COLUMNS: ClassVar[tuple[str, ...]] = ("use_case", "decided_at", "status", "choice", "shown", "block")
    """The columns of its top slot's example row that `of` reads."""

    @classmethod
    def of(cls, row: Mapping[Any, Any]) -> KnownDecision:
        """The decision of its top-slot example row (``shown`` as stored: JSON, or None)."""
        shown = tuple(orjson.loads(row["shown"])) if row["shown"] else None
        return cls(row["use_case"], row["decided_at"], row["status"], row["choice"], shown, row["block"])

    def examples(self, decision_id: str) -> list[str]:
        """The keys of the decision's examples, one per shown slot."""
        return [example_key(decision_id, slot) for slot in range(len(self.shown or (None,)))]

    def slot_of(self, candidate: str | None) -> int | None:
        """The slot a report about ``candidate`` is about (None: it was not shown)."""
        if candidate is None or candidate == self.choice:
            return 0
        return self.shown.index(candidate) if self.shown and candidate in self.shown else None


class ExampleStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        metadata.create_all(engine)
        _move_old_pending(engine)
        _add_missing_columns(engine)
        _update_indexes(engine)

    @classmethod
    def from_url(cls, url: str, *, schema: str | None = None) -> ExampleStore:
        """``schema``: a PostgreSQL schema of its own (created if missing), e.g. one per test or demo."""
        return cls(open_database(url, schema=schema))

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self.engine.begin() as connection:
            yield connection

    # -- offsets ----------------------------------------------------------------------------------

    def offsets(self, source: str) -> SourceOffsets:
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(offsets.c.topic, offsets.c.partition, offsets.c.next_offset).where(
                    offsets.c.source == source
                )
            )
            return {(row.topic, row.partition): row.next_offset for row in rows}

    @staticmethod
    def move_offsets(connection: Connection, source: str, starts: StartOffsets, ends: SourceOffsets) -> None:
        """Move each partition's offset from where the batch started to where it ends, only if
        the database still holds the start: trainers of one group that briefly read the same
        partition (one rebalanced away, mid-batch) store its batch once. Raises `OffsetsMoved`,
        and the caller's transaction rolls back with everything the batch wrote."""
        for (topic, partition), end in ends.items():
            key = {"source": source, "topic": topic, "partition": partition}
            start = starts.get((topic, partition))
            if start is None:
                # RETURNING, not rowcount: psycopg gives -1 for an INSERT ... ON CONFLICT
                statement = (
                    _insert(connection, offsets).on_conflict_do_nothing().returning(offsets.c.partition)
                )
                moved = len(connection.execute(statement, {**key, "next_offset": end}).all())
            else:
                moved = connection.execute(
                    sa.update(offsets)
                    .where(
                        (offsets.c.source == source)
                        & (offsets.c.topic == topic)
                        & (offsets.c.partition == partition)
                        & (offsets.c.next_offset == start)
                    )
                    .values(next_offset=end)
                ).rowcount
            if moved != 1:
                raise OffsetsMoved(f"{topic}[{partition}] of {source} moved past {start} meanwhile")

    # -- counters ---------------------------------------------------------------------------------

    @staticmethod
    def add_to_counters(connection: Connection, increments: Mapping[str, int]) -> None:
        rows = [{"name": name, "value": value} for name, value in increments.items() if value]
        if not rows:
            return
        statement = _insert(connection, counters)
        statement = statement.on_conflict_do_update(
            index_elements=["name"], set_={"value": counters.c.value + statement.excluded.value}
        )
        connection.execute(statement, rows)

    def counters(self) -> dict[str, int]:
        with self.engine.connect() as connection:
            return {row.name: row.value for row in connection.execute(sa.select(counters))}

    # -- joining ----------------------------------------------------------------------------------

    @staticmethod
    def known_decisions(connection: Connection, decision_ids: Iterable[str]) -> dict[str, KnownDecision]:
        """decision id -> its use case, time, status and shown candidates, for those of the ids that
        are stored (looked up by their top slot's example: a lower slot's key is no decision id)."""
        found: dict[str, KnownDecision] = {}
        columns = (
            examples.c.decision_id,
            examples.c.use_case,
            examples.c.decided_at,
            examples.c.status,
            examples.c.choice,
            examples.c.shown,
            examples.c.block,
        )
        query = sa.select(*columns).where(examples.c.slot == 0)
        for rows in _select_in(connection, "known_decisions", query, examples.c.decision_id, decision_ids):
            found.update({row.decision_id: KnownDecision.of(row._mapping) for row in rows})
        return found

    @staticmethod
    def add_feature_block(connection: Connection, use_case: str, rows: int, data: bytes) -> int:
        """Store the features of a batch's examples of the use case (``data``: `encode_block`'s,
        of ``rows`` examples); returns the block's id."""
        statement = (
            sa.insert(feature_blocks)
            .values(use_case=use_case, rows=rows, data=data)
            .returning(feature_blocks.c.block_id)
        )
        return int(connection.execute(statement).scalar_one())

    @staticmethod
    def activate(connection: Connection, example_keys: Sequence[str]) -> None:
        """Inactive decisions' examples become active, and open again: `close_windows` gives the
        outcomes no report labelled their defaults, even if the windows have ended."""
        for chunk in _chunks(sorted(set(example_keys))):
            connection.execute(
                sa.update(examples)
                .where(examples.c.decision_id.in_(chunk) & (examples.c.status == "inactive"))
                .values(status="active", closed=False)
            )

    @staticmethod
    def abandon(connection: Connection, example_keys: Sequence[str]) -> None:
        """Abandoned decisions' examples lose any label they have and never get one."""
        for chunk in _chunks(sorted(set(example_keys))):
            connection.execute(
                sa.update(examples).where(examples.c.decision_id.in_(chunk)).values(status="abandoned")
            )
            connection.execute(sa.delete(labels).where(labels.c.decision_id.in_(chunk)))

    @staticmethod
    def take_pending_activations(
        connection: Connection, decision_ids: Iterable[str]
    ) -> dict[str, dict[str, float]]:
        """Remove and return the activations waiting for these decisions: kind -> when logged."""
        taken: dict[str, dict[str, float]] = {}
        waiting = _waiting_among(connection, pending_activations, decision_ids)
        query = sa.select(
            pending_activations.c.decision_id, pending_activations.c.kind, pending_activations.c.happened_at
        )
        for rows in _select_in(
            connection, "pending_activations", query, pending_activations.c.decision_id, waiting
        ):
            for row in rows:
                taken.setdefault(row.decision_id, {})[row.kind] = row.happened_at
        for chunk in _chunks(sorted(taken)):
            connection.execute(
                sa.delete(pending_activations).where(pending_activations.c.decision_id.in_(chunk))
            )
        return taken

    @staticmethod
    def existing_labels(connection: Connection, example_keys: Iterable[str]) -> set[tuple[str, str]]:
        """(example key, outcome) of the labels these examples have."""
        found: set[tuple[str, str]] = set()
        query = sa.select(labels.c.decision_id, labels.c.outcome)
        for rows in _select_in(connection, "existing_labels", query, labels.c.decision_id, example_keys):
            found.update((row.decision_id, row.outcome) for row in rows)
        return found

    @staticmethod
    def pending_keys(connection: Connection, decision_ids: Iterable[str]) -> set[tuple[str, str, str]]:
        """(decision id, outcome, feedback id) of the early reports already waiting for these decisions."""
        found: set[tuple[str, str, str]] = set()
        columns = (pending_feedback.c.decision_id, pending_feedback.c.outcome, pending_feedback.c.feedback_id)
        waiting = _waiting_among(connection, pending_feedback, decision_ids)
        query = sa.select(*columns)
        for rows in _select_in(connection, "pending_keys", query, pending_feedback.c.decision_id, waiting):
            found.update((row.decision_id, row.outcome, row.feedback_id) for row in rows)
        return found

    @staticmethod
    def take_pending(connection: Connection, decision_ids: Iterable[str]) -> list[dict[str, Any]]:
        """Remove and return the early reports waiting for these decisions, in log order."""
        taken: list[dict[str, Any]] = []
        waiting = _waiting_among(connection, pending_feedback, decision_ids)
        for chunk in _chunks(sorted(waiting)):
            condition = pending_feedback.c.decision_id.in_(chunk)
            rows = connection.execute(sa.select(pending_feedback).where(condition))
            taken.extend(dict(row._mapping) for row in rows)
            connection.execute(sa.delete(pending_feedback).where(condition))
        return sorted(taken, key=lambda row: int(row["arrival"]))

    @staticmethod
    def expire_pending(connection: Connection, windows: Mapping[str, float], now: float) -> int:
        """Delete the waiting reports whose decision can no longer make them count: every one
        that happened more than its outcome's window before ``now`` (the longest window of any
        use case declaring it; for an outcome nobody declares, the longest of all), and every
        waiting activation older than the longest window. Returns how many were deleted."""
        longest = max(windows.values(), default=0.0)
        expired = 0
        for outcome, window in windows.items():
            expired += connection.execute(
                sa.delete(pending_feedback).where(
                    (pending_feedback.c.outcome == outcome) & (pending_feedback.c.happened_at < now - window)
                )
            ).rowcount
        expired += connection.execute(
            sa.delete(pending_feedback).where(
                pending_feedback.c.outcome.not_in(list(windows))
                & (pending_feedback.c.happened_at < now - longest)
            )
        ).rowcount
        expired += connection.execute(
            sa.delete(pending_activations).where(pending_activations.c.happened_at < now - longest)
        ).rowcount
        return int(expired)

    @staticmethod
    def close_windows(
        connection: Connection,
        use_case: str,
        attribution: Attribution,
        now: float,
    ) -> int:
        """Give every open decision whose window for an outcome ended before ``now`` the outcome's
        default, unless feedback labelled it; mark decisions whose every window ended as closed.
        Returns the defaults applied."""
        applied = 0
        marks: list[dict[str, Any]] = []
        for outcome, window in attribution.windows.items():
            default = attribution.defaults[outcome]
            already = sa.exists().where(
                (labels.c.decision_id == examples.c.decision_id) & (labels.c.outcome == outcome)
            )
            chosen = sa.select(
                examples.c.decision_id,
                sa.literal(outcome, sa.String),
                examples.c.use_case,
                sa.literal(default, sa.Float),
                sa.literal("default", sa.String),
                examples.c.decided_at + window,
                examples.c.decided_at,
                examples.c.block,
            ).where(
                (examples.c.use_case == use_case)
                & _UNCLOSED
                & (examples.c.status == "active")
                & (examples.c.decided_at <= now - window)
                & ~already
            )
            columns = ["decision_id", "outcome", "use_case", "value", "source", "labelled_at", "decided_at"]
            applied += _rows_inserted(
                connection,
                sa.insert(labels).from_select([*columns, "block"], chosen),
                key=labels.c.decision_id,
            )
            marks.append({"use_case": use_case, "outcome": outcome, "closed_before": now - window})
        statement = _insert(connection, window_marks)
        connection.execute(
            statement.on_conflict_do_update(
                index_elements=["use_case", "outcome"],
                set_={"closed_before": statement.excluded.closed_before},
            ),
            marks,
        )
        longest = attribution.longest_window
        connection.execute(
            sa.update(examples)
            .where((examples.c.use_case == use_case) & _UNCLOSED & (examples.c.decided_at <= now - longest))
            .values(closed=True)
        )
        return applied

    # -- reading for training -----------------------------------------------------------------------

    def activity(self, since: float, *, limit: int = 200_000) -> list[tuple[str, float, bool]]:
        """(use case, decided at, got feedback) of the decisions made since ``since`` (top slots,
        not abandoned), oldest first: what the console's traffic view counts per minute."""
        reported = sa.select(labels.c.decision_id).where(labels.c.source == "feedback").distinct().subquery()
        query = (
            sa.select(examples.c.use_case, examples.c.decided_at, reported.c.decision_id.is_not(None))
            .select_from(examples.outerjoin(reported, reported.c.decision_id == examples.c.decision_id))
            .where(
                (examples.c.decided_at >= since) & (examples.c.slot == 0) & (examples.c.status != "abandoned")
            )
            .order_by(examples.c.decided_at)
            .limit(limit)
        )
        with self.engine.connect() as connection:
            return [(str(u), float(t), bool(f)) for u, t, f in connection.execute(query)]

    def example_rows(self, use_case: str) -> Iterator[dict[str, Any]]:
        """Every example of the use case with its labels (``label.<outcome>``, None while the
        window is open and no report came), oldest first: what ``closedloop export examples``
        writes. Features become columns (``feature.<name>``)."""
        query = (
            sa.select(examples, labels.c.outcome, labels.c.value, labels.c.source)
            .select_from(examples.outerjoin(labels, labels.c.decision_id == examples.c.decision_id))
            .where(examples.c.use_case == use_case)
            .order_by(examples.c.decided_at, examples.c.decision_id)
        )
        current: dict[str, Any] | None = None
        blocks = _RecentBlocks(self.engine)
        with self.engine.connect() as connection:
            for row in connection.execute(query):
                if current is None or current["example"] != row.decision_id:
                    if current is not None:
                        yield current
                    current = {
                        "example": row.decision_id,
                        "decision_id": row.decision_id.partition("#")[0],
                        "use_case": row.use_case,
                        "decided_at": row.decided_at,
                        "slot": row.slot,
                        "choice": row.choice,
                        "propensity": row.propensity,
                        "policy": row.policy,
                        "arm": row.arm,
                        "status": row.status,
                        "windows_closed": bool(row.closed),
                        **{f"feature.{k}": v for k, v in blocks.features(row).items()},
                    }
                if row.outcome is not None:
                    current[f"label.{row.outcome}"] = row.value
                    current[f"label_source.{row.outcome}"] = row.source
        if current is not None:
            yield current

    def newest_decision(self) -> float | None:
        """When the newest decision the trainer has read was made (how far behind it is)."""
        with self.engine.connect() as connection:
            newest = connection.execute(sa.select(sa.func.max(examples.c.decided_at))).scalar_one_or_none()
        return None if newest is None else float(newest)

    def waiting(self, use_case: str) -> tuple[int, float | None]:
        """Decisions whose windows have not all closed (not abandoned), and the oldest one's time."""
        query = sa.select(sa.func.count(), sa.func.min(examples.c.decided_at)).where(
            (examples.c.use_case == use_case)
            & _UNCLOSED
            & (examples.c.slot == 0)
            & (examples.c.status != "abandoned")
        )
        with self.engine.connect() as connection:
            count, oldest = connection.execute(query).one()
        return int(count), None if oldest is None else float(oldest)

    def label_counts(self, use_case: str) -> dict[str, int]:
        """outcome -> final labels: those of decisions whose window has closed, the examples
        `labelled_examples` can train on (an early positive inside an open window is not one yet)."""
        query = sa.select(window_marks.c.outcome, window_marks.c.closed_before).where(
            window_marks.c.use_case == use_case
        )
        with self.engine.connect() as connection:
            counts = {
                outcome: _final_count(connection, use_case, outcome, closed_before)
                for outcome, closed_before in connection.execute(query).all()
            }
        return {outcome: count for outcome, count in counts.items() if count}

    def labelled_examples(self, use_case: str, outcome: str, *, limit: int) -> LabelledRows:
        """The latest ``limit`` examples whose label for the outcome is final, oldest first.

        Only decisions whose window has closed count: inside an open window the positives have
        arrived and the negatives have not, and training on that would overstate the outcome.
        """
        through, _ = self.training_window(use_case, outcome)
        if through is None:
            return LabelledRows(np.zeros(0), np.zeros(0), {})
        return self.labelled_examples_between(use_case, outcome, after=-math.inf, until=through, limit=limit)

    def training_window(self, use_case: str, outcome: str) -> tuple[float | None, int]:
        """Until when the outcome's labels are final (None: no window closed yet), and how many
        final labels there are: what a cache of encoded rows checks itself against."""
        with self.engine.connect() as connection:
            closed_before = connection.execute(
                sa.select(window_marks.c.closed_before).where(
                    (window_marks.c.use_case == use_case) & (window_marks.c.outcome == outcome)
                )
            ).scalar_one_or_none()
            if closed_before is None:
                return None, 0
            count = _final_count(connection, use_case, outcome, closed_before)
        return float(closed_before), count

    def labelled_examples_between(
        self, use_case: str, outcome: str, *, after: float, until: float, limit: int
    ) -> LabelledRows:
        """The latest ``limit`` final examples decided in (``after``, ``until``], oldest first."""
        query = (
            _final_labels(use_case, outcome, after=after, until=until)
            .order_by(labels.c.decided_at.desc())
            .limit(limit)
        )
        with self.engine.connect() as connection:
            rows = _driver_rows(connection, query)[::-1]  # oldest first
            # a column at a time by itemgetter (in C): zip(*rows) took five times as long
            decided_at, values = (
                np.fromiter(map(itemgetter(i), rows), np.float64, len(rows)) for i in (0, 1)
            )
            block_ids, keys = (list(map(itemgetter(i), rows)) for i in (2, 3))
            if None in block_ids:  # examples stored before blocks: their features are JSON
                in_blocks: Sequence[int] = [i for i, block in enumerate(block_ids) if block is not None]
                as_json = _json_features(connection, [keys[i] for i, b in enumerate(block_ids) if b is None])
            else:
                in_blocks, as_json = range(len(rows)), {}
            needed = sorted(set(block_ids) - {None})
            blocks = [decode_block(data) for data in _block_data(connection, needed).values()]
        taken = take_rows(blocks, keys if len(in_blocks) == len(rows) else [keys[i] for i in in_blocks])
        return LabelledRows(decided_at, values, _with_json_features(keys, in_blocks, taken, as_json))

    def labels_of(self, use_case: str) -> list[dict[str, Any]]:
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(labels).where(labels.c.use_case == use_case))
            return [dict(row._mapping) for row in rows]

    # -- runs -------------------------------------------------------------------------------------

    def record_run(self, run: TrainingRun) -> int:
        values = {
            "use_case": run.use_case,
            "outcome": run.outcome,
            "started_at": run.started_at,
            "finished_at": run.finished_at,
            "labels_seen": run.labels_seen,
            "promoted": run.promoted,
            "version": run.version,
            "reason": run.reason,
            "report": orjson.dumps(run.report).decode(),
        }
        with self.engine.begin() as connection:
            result = connection.execute(sa.insert(runs).values(**values))
            key = result.inserted_primary_key
            assert key is not None
            return int(key[0])

    def runs(self, use_case: str | None = None) -> list[TrainingRun]:
        query = sa.select(runs).order_by(runs.c.run_id)
        if use_case is not None:
            query = query.where(runs.c.use_case == use_case)
        with self.engine.connect() as connection:
            return [
                TrainingRun(
                    run_id=row.run_id,
                    use_case=row.use_case,
                    outcome=row.outcome,
                    started_at=row.started_at,
                    finished_at=row.finished_at,
                    labels_seen=row.labels_seen,
                    promoted=row.promoted,
                    version=row.version,
                    reason=row.reason,
                    report=orjson.loads(row.report),
                )
                for row in connection.execute(query)
            ]

    def close(self) -> None:
        self.engine.dispose()


def _rows_inserted(connection: Connection, statement: sa.Insert, *, key: sa.Column[Any]) -> int:
    """Execute an INSERT ... SELECT; returns how many rows it inserted: SQLite's row count, and on
    PostgreSQL the inserted keys counted (psycopg's row count comes back as -1 through SQLAlchemy;
    returning 500,000 keys only to count them cost SQLite 0.6 s of closing 1M windows)."""
    if connection.dialect.name == "sqlite":
        return int(connection.execute(statement).rowcount)
    return len(connection.execute(statement.returning(key)).all())


def _final_labels(use_case: str, outcome: str, *, after: float, until: float) -> sa.Select[Any]:
    """(decided at, value, feature block, example key) of the outcome's labels of examples
    decided in (``after``, ``until``]: a range of the labels' time index."""
    return sa.select(labels.c.decided_at, labels.c.value, labels.c.block, labels.c.decision_id).where(
        (labels.c.use_case == use_case) & (labels.c.outcome == outcome) & _decided_in(after, until)
    )


def _driver_rows(connection: Connection, query: sa.Select[Any]) -> list[tuple[Any, ...]]:
    """The rows of ``query``, fetched at once as the driver's tuples: a SQLAlchemy row object for
    each of a million training rows took a third of a retrain's read (row by row, twice as long)."""
    compiled = query.compile(dialect=connection.dialect)
    order = compiled.positiontup
    parameters = compiled.params if order is None else tuple(compiled.params[name] for name in order)
    cursor = connection.connection.cursor()
    try:
        cursor.execute(str(compiled), parameters)
        return list(cursor.fetchall())
    finally:
        cursor.close()


def _final_count(connection: Connection, use_case: str, outcome: str, until: float) -> int:
    """How many labels of the outcome the examples decided by ``until`` have."""
    query = sa.select(sa.func.count()).where(
        (labels.c.use_case == use_case) & (labels.c.outcome == outcome) & _decided_in(-math.inf, until)
    )
    return int(connection.execute(query).scalar_one())


def _decided_in(after: float, until: float) -> sa.ColumnElement[bool]:
    if after == -math.inf:
        return labels.c.decided_at <= until
    return (labels.c.decided_at > after) & (labels.c.decided_at <= until)


def _json_features(connection: Connection, keys: Sequence[str]) -> dict[str, str]:
    """example key -> its features as JSON (examples stored before feature blocks)."""
    query = sa.select(examples.c.decision_id, examples.c.features)
    found: dict[str, str] = {}
    for rows in _select_in(connection, "json_features", query, examples.c.decision_id, keys):
        found.update((row.decision_id, row.features) for row in rows)
    return found


def _block_data(connection: Connection, block_ids: Sequence[int]) -> dict[int, bytes]:
    """block id -> its stored data, in block order."""
    found: dict[int, bytes] = {}
    for start in range(0, len(block_ids), 900):
        chunk = block_ids[start : start + 900]
        query = sa.select(feature_blocks.c.block_id, feature_blocks.c.data).where(
            feature_blocks.c.block_id.in_(chunk)
        )
        found.update((int(row.block_id), bytes(row.data)) for row in connection.execute(query))
    return dict(sorted(found.items()))


def _with_json_features(
    keys: Sequence[str], in_blocks: Sequence[int], taken: dict[str, np.ndarray], as_json: Mapping[str, str]
) -> dict[str, np.ndarray]:
    """Feature name -> the values of the examples ``keys``: ``taken`` from their blocks for those
    ``in_blocks``, and for examples stored before blocks, from their JSON (``as_json``; the
    columns those examples touch become objects)."""
    if len(in_blocks) == len(keys):
        return taken
    columns: dict[str, np.ndarray] = {}
    for name, values in taken.items():
        columns[name] = np.full(len(keys), None, dtype=object)
        columns[name][in_blocks] = values
    for i, key in enumerate(keys):
        if key in as_json:
            for name, value in orjson.loads(as_json[key]).items():
                columns.setdefault(name, np.full(len(keys), None, dtype=object))[i] = value
    return columns


class _RecentBlocks:
    """The features of examples read in time order, from their JSON or their block; the last few
    blocks stay decoded (an export reads a block's rows one after another)."""

    def __init__(self, engine: Engine, *, keep: int = 4) -> None:
        self._engine = engine
        self._keep = keep
        self._blocks: dict[int, BlockRows] = {}

    def features(self, row: Any) -> dict[str, Any]:
        if row.block is None:
            return dict(orjson.loads(row.features))
        block = self._blocks.get(row.block)
        if block is None:
            with self._engine.connect() as connection:
                data = _block_data(connection, [row.block])[row.block]
            block = self._blocks[row.block] = BlockRows(decode_block(data))
            if len(self._blocks) > self._keep:
                del self._blocks[next(iter(self._blocks))]
        return block.features(row.decision_id)


_ADDED_COLUMNS = {
    examples: (
        "status VARCHAR(16) NOT NULL DEFAULT 'active'",  # all of an earlier version's were active
        "slot INTEGER NOT NULL DEFAULT 0",
        "shown TEXT",
        "block INTEGER",
    ),
    pending_feedback: ("candidate VARCHAR(256)",),
    labels: ("decided_at FLOAT", "block INTEGER"),  # after cl_examples' block, which fills it
}
_FILLED_IN = {
    labels: (
        "UPDATE cl_labels SET decided_at ="
        " (SELECT e.decided_at FROM cl_examples e WHERE e.decision_id = cl_labels.decision_id),"
        " block = (SELECT e.block FROM cl_examples e WHERE e.decision_id = cl_labels.decision_id)"
    ),
}
"""What the added columns hold for the rows a table had (a label's example is always stored)."""
_RETIRED_INDEXES = {
    examples: ("ix_cl_examples_open", "ix_cl_examples_time"),
    labels: ("ix_cl_labels_use_case",),
}
"""Indexes of earlier versions that today's indexes of the table replace."""


def _add_missing_columns(engine: Engine) -> None:
    """Columns a store of an earlier version lacks, added with the values its rows had."""
    inspector = sa.inspect(engine)
    for table, columns in _ADDED_COLUMNS.items():
        present = {c["name"] for c in inspector.get_columns(table.name, schema=table.schema)}
        missing = [column for column in columns if column.split()[0] not in present]
        if not missing:
            continue
        with engine.begin() as connection:
            for column in missing:
                connection.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {column}"))
            if table in _FILLED_IN:
                connection.execute(sa.text(_FILLED_IN[table]))


def _update_indexes(engine: Engine) -> None:
    """A store of an earlier version: its retired indexes dropped, today's created (once: a store
    with today's indexes is not altered)."""
    inspector = sa.inspect(engine)
    for table in (examples, labels):
        present = {index["name"] for index in inspector.get_indexes(table.name, schema=table.schema)}
        retired = [name for name in _RETIRED_INDEXES[table] if name in present]
        missing = [index for index in table.indexes if index.name not in present]
        if not retired and not missing:
            continue
        with engine.begin() as connection:
            for name in retired:
                connection.execute(sa.text(f"DROP INDEX IF EXISTS {name}"))
            for index in missing:
                index.create(connection, checkfirst=True)


def _move_old_pending(engine: Engine) -> None:
    """Move the reports a store of an earlier version left waiting into today's table."""
    if _OLD_PENDING not in sa.inspect(engine).get_table_names():
        return
    old = sa.Table(_OLD_PENDING, sa.MetaData(), autoload_with=engine)
    columns = ["decision_id", "outcome", "value", "feedback_id", "happened_at"]
    with engine.begin() as connection:
        moved = sa.insert(pending_feedback).from_select(columns, sa.select(*(old.c[c] for c in columns)))
        connection.execute(moved)
        old.drop(connection)
