"""Building an engine from the configuration: Redis and Kafka when configured, local stores if not."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np

from closedloop.contracts import ClosedLoopConfig
from closedloop.eventlog import open_event_log
from closedloop.registry import open_registry

from ._decision_index import (
    DecisionIndex,
    MemoryDecisionIndex,
    RedisDecisionIndex,
)
from ._engine import DecisionEngine


def open_decision_index(config: ClosedLoopConfig) -> DecisionIndex:
    infrastructure = config.infrastructure
    if infrastructure.redis_url:
        return RedisDecisionIndex.from_url(infrastructure.redis_url, prefix=infrastructure.key_prefix)
    return MemoryDecisionIndex(prefix=infrastructure.key_prefix)


def open_engine(
    config: ClosedLoopConfig,
    *,
    seed: int | None = None,
    clock: Callable[[], datetime] | None = None,
) -> DecisionEngine:
    """An engine on the stores ``config.infrastructure`` names (embedded defaults when unset).

    ``clock`` stamps decisions (a simulation runs on its own time); the wall clock by default.
    """
    return DecisionEngine(
        config,
        registry=open_registry(config.infrastructure),
        event_log=open_event_log(config.infrastructure),
        index=open_decision_index(config),
        rng=np.random.default_rng(seed),
        clock=clock or (lambda: datetime.now(UTC)),
    )
