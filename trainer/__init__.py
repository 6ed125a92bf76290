"""The trainer: logged outcomes in, gated LightGBM champions out.

- `Trainer`: consume decision and feedback events, join them by decision id within each outcome's
  window, store examples through SQLAlchemy, retrain on the trigger, gate on held-out later data,
  publish to the registry with lineage
- `open_trainer(config)`: a trainer on the stores the configuration names (Kafka consumer group or
  the embedded event files; SQLite or PostgreSQL; Redis or local registry)
- `ExampleStore`, `TrainingRun`: the examples, labels, offsets and runs in the metadata database
- `open_database(url)`: an engine on the metadata database (SQLite or PostgreSQL), shared with the tuner
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from closedloop.contracts import ClosedLoopConfig, Topics
from closedloop.eventlog import FileEventLog
from closedloop.registry import ModelRegistry, open_registry
from closedloop.trainer._database import open_database
from closedloop.trainer._sources import EventBatch, EventSource, FileEventSource, KafkaEventSource
from closedloop.trainer._store import ExampleStore, LabelledExample, TrainingRun
from closedloop.trainer._trainer import CycleReport, Trainer
from closedloop.trainer._training import Dataset, GateDecision, evaluate, fit, gate, lightgbm_params


def open_trainer(
    config: ClosedLoopConfig,
    *,
    group_id: str | None = None,
    consumer_config: Mapping[str, Any] | None = None,
    event_log: FileEventLog | None = None,
    registry: ModelRegistry | None = None,
    clock: Callable[[], float] = time.time,
    lateness: float = 60.0,
    progress: Callable[[str], None] | None = None,
    database_schema: str | None = None,
) -> Trainer:
    """A trainer on ``config.infrastructure``: Kafka when ``kafka_bootstrap`` is set, else the
    event files under ``data_dir`` (``event_log``: share an embedded engine's log in-process)."""
    infrastructure = config.infrastructure
    store = ExampleStore.from_url(infrastructure.resolved_database_url, schema=database_schema)
    topics = Topics(infrastructure.topic_prefix)
    source: EventSource
    if infrastructure.kafka_bootstrap:
        source = KafkaEventSource(
            infrastructure.kafka_bootstrap,
            topics,
            group_id=group_id or f"{infrastructure.topic_prefix}.trainer",
            stored_offsets=store.offsets,
            consumer_config=consumer_config,
        )
    else:
        log = event_log or FileEventLog(infrastructure.data_path / "events", read_only=True)
        source = FileEventSource(log, topics)
    return Trainer(
        config,
        store=store,
        source=source,
        registry=registry or open_registry(infrastructure),
        clock=clock,
        lateness=lateness,
        progress=progress,
    )


__all__ = [
    "CycleReport",
    "Dataset",
    "EventBatch",
    "EventSource",
    "ExampleStore",
    "FileEventSource",
    "GateDecision",
    "KafkaEventSource",
    "LabelledExample",
    "Trainer",
    "TrainingRun",
    "evaluate",
    "fit",
    "gate",
    "lightgbm_params",
    "open_database",
    "open_trainer",
]
