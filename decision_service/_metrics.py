"""Prometheus metrics of one decision engine, in a registry of its own (not the global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

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
        self.feedback = Counter(
            "closedloop_feedback", "Feedback items by result", ["status"], registry=self.registry
        )
        self.rejected_requests = Counter(
            "closedloop_rejected_requests", "Requests refused with a 4xx", ["code"], registry=self.registry
        )
        self.unknown_categories = Gauge(
            "closedloop_unknown_categories",
            "Categorical values not declared in the configuration (scored as missing)",
            ["use_case"],
            registry=self.registry,
        )
        self.model_swaps = Gauge(
            "closedloop_model_swaps", "Times the serving models were replaced", registry=self.registry
        )
        self.events_delivered = Gauge(
            "closedloop_events_delivered", "Events acknowledged by Kafka", registry=self.registry
        )
        self.outbox_backlog = Gauge(
            "closedloop_outbox_backlog", "1 while events wait in the outbox for Kafka", registry=self.registry
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
