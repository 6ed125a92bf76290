"""Building a trainer on the stores the configuration names."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from closedloop.contracts import ClosedLoopConfig, Topics
from closedloop.eventlog import FileEventLog
from closedloop.registry import ModelRegistry, open_registry

from ._sources import EventSource, FileEventSource, KafkaEventSource
from ._store import ExampleStore
from ._trainer import Trainer


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
