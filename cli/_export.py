"""`closedloop export decisions|feedback|examples --format parquet|csv`: the logs and the training
examples as one table each, for a notebook (``pandas.read_parquet`` / ``read_csv``).

decisions and feedback come from the event log (Kafka or the embedded files), one row per event
(an event logged twice, as the log's at-least-once delivery allows, is exported once);
examples from the trainer's metadata database, one row per training example with a column per
outcome's label. Feature dictionaries become columns (``context.country``, ``chosen.price``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Protocol, TypeVar

import typer

from closedloop.contracts import ClosedLoopConfig, ConfigError, Topics, load_config

from ._access import ConfigOption


class _Logged(Protocol):
    @property
    def event_id(self) -> str: ...

    @property
    def use_case(self) -> str | None: ...


Event = TypeVar("Event", bound=_Logged)


class Kind(StrEnum):
    decisions = "decisions"
    feedback = "feedback"
    examples = "examples"


class Format(StrEnum):
    parquet = "parquet"
    csv = "csv"


def export(
    kind: Annotated[
        Kind, typer.Argument(help="decisions, feedback (from the event log) or examples (the trainer's).")
    ],
    output: Annotated[Path | None, typer.Option(help="The file to write (default: KIND.FORMAT).")] = None,
    format: Annotated[Format, typer.Option("--format", help="parquet or csv.")] = Format.parquet,
    use_case: Annotated[str | None, typer.Option(help="Only this use case.")] = None,
    config: ConfigOption = Path("closedloop.yaml"),
) -> None:
    """Write decisions, feedback or training examples as one table (Parquet or CSV)."""
    try:
        import pyarrow as pa
        import pyarrow.csv as pa_csv
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(
            "closedloop export needs pyarrow.", hint="pip install pyarrow (or 'closedloop[trainer]')."
        ) from None
    loaded = load_config(config)
    if use_case is not None and use_case not in loaded.use_cases:
        raise ConfigError(f"Unknown use case {use_case!r}.", hint=f"One of {sorted(loaded.use_cases)}.")
    rows = list(_ROWS[kind](loaded, use_case))
    target = output or Path(f"{kind.value}.{format.value}")
    table = pa.Table.from_pylist(rows) if rows else pa.table({"decision_id": pa.array([], pa.string())})
    if format is Format.parquet:
        pq.write_table(table, target)
    else:
        pa_csv.write_csv(table, target)
    typer.echo(f"wrote {len(rows)} {kind.value} to {target}")


def _each_once(
    config: ClosedLoopConfig, topic: str, decode: Callable[[bytes], Event], only: str | None
) -> Iterator[Event]:
    """The topic's events, each once (the log delivers at least once), of one use case if asked."""
    from closedloop.eventlog import scan_topic

    seen: set[str] = set()
    for batch in scan_topic(config.infrastructure, topic):
        for record in batch:
            event = decode(record)
            if event.event_id not in seen and only in (None, event.use_case):
                seen.add(event.event_id)
                yield event


def _decisions(config: ClosedLoopConfig, only: str | None) -> Iterator[dict[str, Any]]:
    from closedloop.contracts import decode_decision

    topic = Topics(config.infrastructure.topic_prefix).decisions
    for event in _each_once(config, topic, decode_decision, only):
        chosen = event.logged_candidate()
        yield {
            "decision_id": event.event_id,
            "use_case": event.use_case,
            "unit_id": event.unit_id,
            "timestamp": event.timestamp,
            "decision_type": event.decision_type,
            "choice": event.choice,
            "ranking": json.dumps(event.ranking) if event.ranking is not None else None,
            "propensity": event.propensity,
            "policy": event.policy,
            "experiment": event.experiment,
            "arm": event.arm,
            "experiment_phase": event.experiment_phase,
            "active": event.active,
            "candidates": len(event.candidates),
            "model_versions": json.dumps(event.model_versions),
            **{f"context.{k}": v for k, v in event.context.items()},
            **({f"chosen.{k}": v for k, v in chosen.features.items()} if chosen else {}),
        }


def _feedback(config: ClosedLoopConfig, only: str | None) -> Iterator[dict[str, Any]]:
    from closedloop.contracts import decode_feedback

    topic = Topics(config.infrastructure.topic_prefix).feedback
    for event in _each_once(config, topic, decode_feedback, only):
        yield {
            "feedback_id": event.event_id,
            "decision_id": event.decision_id,
            "use_case": event.use_case,
            "timestamp": event.timestamp,
            "received_at": event.received_at,
            "orphan": event.orphan,
            "activation": event.activation,
            "candidate_id": event.candidate_id,
            **{f"outcome.{k}": v for k, v in event.outcomes.items()},
        }


def _examples(config: ClosedLoopConfig, only: str | None) -> Iterator[dict[str, Any]]:
    from closedloop.trainer import ExampleStore

    store = ExampleStore.from_url(config.infrastructure.resolved_database_url)
    try:
        for use_case in config.use_cases if only is None else [only]:
            yield from store.example_rows(use_case)
    finally:
        store.close()


_ROWS = {Kind.decisions: _decisions, Kind.feedback: _feedback, Kind.examples: _examples}
