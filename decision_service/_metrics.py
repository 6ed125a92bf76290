"""Prometheus metrics of one decision engine, in a registry of its own (not the global one).

Named by Prometheus's conventions: what counts things is a counter (``_total`` on the wire),
including counts the engine keeps itself (unknown categories, model swaps, deliveries to Kafka),
which `count_up_to` turns into counter increments; a gauge is only for a level (the backlog).

Under ``closedloop serve --workers N`` each worker writes its values to prometheus_client's
multiprocess files (the ``PROMETHEUS_MULTIPROC_DIR`` set by the parent), and a scrape of any worker
reports them summed over the workers; each gauge says how its workers' values combine.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)


class EngineMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.decisions = Counter(
            "closedloop_decisions", "Decisions made", ["use_case", "policy"], registry=self.registry
        )
        self.decide_seconds = Histogram(
            "closedloop_decide_seconds",
            "Time to make and log one decision",
            ["use_case"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.inactive_decisions = Counter(
            "closedloop_inactive_decisions",
            "Decisions made with activate=false (they count once activated)",
            ["use_case"],
            registry=self.registry,
        )
        self.activations = Counter(
            "closedloop_activations",
            "Activation events logged: activate (by the product), abandon (by the SDK, on a timeout)",
            ["kind"],
            registry=self.registry,
        )
        self.feedback = Counter(
            "closedloop_feedback", "Feedback items by result", ["status"], registry=self.registry
        )
        self.value_not_finite = Counter(
            "closedloop_value_not_finite",
            "Decisions the default policy made because the value function gave a non-finite value",
            ["use_case"],
            registry=self.registry,
        )
        self.orphans_dropped = Counter(
            "closedloop_orphans_dropped",
            "Reports for unknown decisions not kept: over infrastructure.max_orphans_per_second",
            registry=self.registry,
        )
        self.index_unavailable = Counter(
            "closedloop_index_unavailable",
            "Decisions or feedback logged while the decision index (Redis) could not be reached",
            ["path"],
            registry=self.registry,
        )
        self.rejected_requests = Counter(
            "closedloop_rejected_requests", "Requests refused with a 4xx", ["code"], registry=self.registry
        )
        self.unknown_categories = Counter(
            "closedloop_unknown_categories",
            "Categorical values not declared in the configuration (scored as missing)",
            ["use_case"],
            registry=self.registry,
        )
        self.model_swaps = Counter(
            "closedloop_model_swaps",
            "Times the serving models were replaced (summed over workers: each swaps its own)",
            registry=self.registry,
        )
        self.events_delivered = Counter(
            "closedloop_events_delivered", "Events acknowledged by Kafka", registry=self.registry
        )
        self.index_writes = Counter(
            "closedloop_index_writes",
            "Decisions written to the decision index from the event loop (summed over workers)",
            registry=self.registry,
        )
        self.index_batches = Counter(
            "closedloop_index_batches",
            "Calls that carried them: writes / batches is how many decisions a call carried",
            registry=self.registry,
        )
        self.outbox_backlog = Gauge(
            "closedloop_outbox_backlog",
            "1 while events wait in the outbox for Kafka",
            registry=self.registry,
            multiprocess_mode="livemax",
        )

        self._counted: dict[tuple[int, str], float] = {}
        self._decision_series: dict[tuple[str, str], tuple[Counter, Histogram]] = {}

    def count_decision(self, use_case: str, policy: str, *, active: bool, seconds: float) -> None:
        """Count one decision and its time; the labelled series are looked up once per use case
        and policy (``labels()`` costs microseconds on every decision otherwise)."""
        series = self._decision_series.get((use_case, policy))
        if series is None:
            series = (self.decisions.labels(use_case, policy), self.decide_seconds.labels(use_case))
            self._decision_series[(use_case, policy)] = series
        series[0].inc()
        series[1].observe(seconds)
        if not active:
            self.inactive_decisions.labels(use_case).inc()

    def count_up_to(self, counter: Counter, total: float, *labels: str) -> None:
        """Increment ``counter`` by what ``total`` (a count the engine keeps) grew since last time."""
        key = (id(counter), ",".join(labels))
        grown = total - self._counted.get(key, 0.0)
        if grown > 0:
            (counter.labels(*labels) if labels else counter).inc(grown)
            self._counted[key] = total

    @property
    def multiprocess(self) -> bool:
        return "PROMETHEUS_MULTIPROC_DIR" in os.environ

    def render(self) -> bytes:
        if not self.multiprocess:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
