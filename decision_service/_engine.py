"""The decision engine: the whole decision service minus HTTP.

It owns the stores (registry, event log, decision index), the serving models and the metrics, and
hands each request to the part that handles it: `Decider` for decisions, `FeedbackIntake` for
outcomes, `Activations` for activating and abandoning decisions. `EmbeddedClient` runs it
in-process and the FastAPI app wraps it; both call only the methods below, never the parts.
Every decision and every feedback is logged before it is answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from closedloop.contracts import (
    AbandonedRequest,
    ActivationResult,
    ClosedLoopConfig,
    DecideInput,
    Decision,
    FeedbackIn,
    FeedbackResult,
)
from closedloop.eventlog import EventLog, KafkaEventLog
from closedloop.registry import ModelRegistry

from ._activations import Activations
from ._decider import Decider
from ._decision_index import DecisionIndex
from ._feedback_intake import FeedbackIntake
from ._index_batcher import IndexBatcher
from ._metrics import EngineMetrics
from ._serving_models import RefreshLoop, ServingModels

GRACE_SECONDS = 3600.0
"""How long the decision index keeps a fact past the longest attribution window."""


@dataclass(frozen=True)
class EngineStatus:
    degraded: bool
    """The decision index cannot be reached: decisions go on from the models in memory, feedback
    is refused (503) until it is back."""
    decision_index: bool
    event_log: dict[str, Any]
    """The log's state (Kafka: connected, delivered, backlog): reported, not required, because
    events wait in the outbox while Kafka is down."""


class DecisionEngine:
    def __init__(
        self,
        config: ClosedLoopConfig,
        *,
        registry: ModelRegistry,
        event_log: EventLog,
        index: DecisionIndex,
        rng: np.random.Generator | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._config = config
        self._registry = registry
        self._event_log = event_log
        self._index = index
        self._metrics = EngineMetrics()
        # Each use case's facts live as long as its own windows (plus grace), not the longest of all.
        fact_ttl = {
            name: uc.max_window.total_seconds() + GRACE_SECONDS for name, uc in config.use_cases.items()
        }
        self._batcher: IndexBatcher | None = None
        self._models = ServingModels(config, registry)
        self._models.refresh(force=True)
        self._refresher: RefreshLoop | None = None
        self._activations = Activations(
            config, index=index, event_log=event_log, metrics=self._metrics, clock=clock
        )
        self._decider = Decider(
            config,
            models=self._models,
            index=index,
            event_log=event_log,
            activations=self._activations,
            metrics=self._metrics,
            fact_ttl=fact_ttl,
            rng=rng or np.random.default_rng(),
            clock=clock,
        )
        self._intake = FeedbackIntake(
            config, index=index, event_log=event_log, metrics=self._metrics, fact_ttl=fact_ttl, clock=clock
        )

    # -- decisions and feedback -------------------------------------------------------------------

    def decide(self, request: DecideInput) -> Decision:
        return self._decider.decide(request)

    async def decide_async(self, request: DecideInput) -> Decision:
        """`decide` on an event loop: the index lookups and writes of decisions made in the same
        turn of the loop go to Redis together (`IndexBatcher`), not one round trip each."""
        loop = asyncio.get_running_loop()
        if self._batcher is None or self._batcher.loop is not loop:
            self._batcher = IndexBatcher(self._index, loop)
        batcher = self._batcher
        seen = None
        if request.request_id is not None:
            seen = await batcher.lookup(self._index.keys.request_seen(request.request_id))
        logged = self._decider.log_decision(request, seen=seen)
        if isinstance(logged, Decision):
            return logged
        return self._decider.indexed(logged, await batcher.commit(logged.write))

    def model_values(self, request: DecideInput) -> np.ndarray | None:
        """The serving models' value of each candidate, nothing explored or logged; None while
        the default policy serves."""
        return self._decider.model_values(request)

    def log_feedback(
        self, items: Sequence[FeedbackIn], *, use_cases: Collection[str] | None = None
    ) -> list[FeedbackResult]:
        """Check, de-duplicate and log a batch of feedback; one result per item, in order.
        ``use_cases``: the only use cases whose decisions the caller may report on."""
        return self._intake.log_feedback(items, use_cases=use_cases)

    def activate(self, decision_id: str, *, use_cases: Collection[str] | None = None) -> ActivationResult:
        """Make a decision made with ``activate=False`` count (the product showed it)."""
        return self._activations.activate(decision_id, use_cases=use_cases)

    def abandon(self, items: Sequence[AbandonedRequest]) -> int:
        """Log that these decide requests' answers were never used; they will not count."""
        return self._activations.abandon(items)

    # -- models -----------------------------------------------------------------------------------

    def refresh_models(self) -> bool:
        """Load any new champion or experiment phase from the registry now; True if one changed."""
        return self._models.refresh()

    def start_model_refresh(self, interval: float = 0.5) -> None:
        """Poll the registry in the background and hot-swap new champions (stopped by close)."""
        if self._refresher is None:
            self._refresher = RefreshLoop(self._models, interval=interval)
            self._refresher.start()

    def stop_model_refresh(self) -> None:
        if self._refresher is not None:
            self._refresher.stop()
            self._refresher = None

    def serving_versions(self, use_case: str) -> dict[str, str]:
        """Outcome -> the model version serving ``use_case`` here."""
        return self._models.for_use_case(use_case).versions

    def model_listing(self) -> dict[str, Any]:
        """Per use case and outcome: the version serving here, the champion and every version;
        and the models refused (``errors``)."""
        serving = self._models.snapshot()
        answer: dict[str, Any] = {}
        for name, uc in self._config.use_cases.items():
            champions = self._registry.champions(name, list(uc.outcomes))
            answer[name] = {
                outcome: {
                    "serving": serving[name].versions.get(outcome),
                    "champion": champions[outcome],
                    "versions": [
                        {"version": v.version, "metadata": dict(v.metadata)}
                        for v in self._registry.versions(name, outcome)
                    ],
                }
                for outcome in uc.outcomes
            }
        return {"use_cases": answer, "errors": dict(self._models.errors)}

    def feature_names(self, use_case: str) -> list[str]:
        return self._decider.feature_names(use_case)

    # -- operations -------------------------------------------------------------------------------

    def status(self) -> EngineStatus:
        """Whether the engine is degraded, and its stores' state."""
        index = self._index.ping()
        return EngineStatus(degraded=not index, decision_index=index, event_log=self._event_log.stats())

    def wait_until_delivered(self, timeout: float) -> bool:
        """True once every logged event has reached the log (Kafka acknowledged it; at once for files)."""
        if isinstance(self._event_log, KafkaEventLog):
            return self._event_log.wait_until_delivered(timeout)
        return True

    @property
    def metrics_per_worker(self) -> bool:
        """True under ``serve --workers N``: each worker keeps its own gauges fresh."""
        return self._metrics.multiprocess

    def update_gauges(self) -> None:
        """Bring the metrics fed from the engine's own counts up to date."""
        metrics = self._metrics
        metrics.count_up_to(metrics.model_swaps, self._models.swaps)
        if self._batcher is not None:
            metrics.count_up_to(metrics.index_writes, self._batcher.writes)
            metrics.count_up_to(metrics.index_batches, self._batcher.batches)
        for name, count in self._decider.unknown_category_counts().items():
            metrics.count_up_to(metrics.unknown_categories, count, name)
        if isinstance(self._event_log, KafkaEventLog):
            stats = self._event_log.stats()
            metrics.count_up_to(metrics.events_delivered, stats["delivered"])
            metrics.outbox_backlog.set(1 if stats["backlog"] else 0)

    def render_metrics(self) -> bytes:
        """Prometheus text, gauges updated first."""
        self.update_gauges()
        return self._metrics.render()

    def count_rejected(self, code: str) -> None:
        """Count a request refused with a 4xx (by the HTTP layer, before it reached the engine)."""
        self._metrics.rejected_requests.labels(code).inc()

    def close(self) -> None:
        self.stop_model_refresh()
        self._event_log.close()
        self._registry.close()
