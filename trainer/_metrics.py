"""The trainer's Prometheus metrics (``closedloop train --metrics-port``): how far behind the log
it is, what its joins counted, its runs and how long they took.

The join's counts live in the metadata database (they survive restarts and are shared by every
trainer of a group); a collector reads the latest snapshot the trainer took after its cycle, so a
scrape never queries the database.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

_RUN_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900)


class TrainerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.runs = Counter(
            "closedloop_trainer_runs",
            "Training runs by use case, outcome and verdict (promoted, held, rejected, skipped)",
            ["use_case", "outcome", "verdict"],
            registry=self.registry,
        )
        self.run_seconds = Histogram(
            "closedloop_trainer_run_seconds",
            "Time to train, gate and publish one outcome's model",
            ["use_case"],
            buckets=_RUN_BUCKETS,
            registry=self.registry,
        )
        self.cycles = Counter("closedloop_trainer_cycles", "Trainer cycles completed", registry=self.registry)
        self._snapshot = _Snapshot()
        self.registry.register(self._snapshot)

    def observe_cycle(self, report: Any, counters: dict[str, int], newest_decision: float | None) -> None:
        """After a cycle: its runs, and the store's join counts and newest decision."""
        self.cycles.inc()
        for run in report.runs:
            verdict = "promoted" if run.promoted else ("skipped" if run.version is None else "not_promoted")
            self.runs.labels(run.use_case, run.outcome, verdict).inc()
            self.run_seconds.labels(run.use_case).observe(max(0.0, run.finished_at - run.started_at))
        self._snapshot.counters = dict(counters)
        self._snapshot.newest_decision = newest_decision

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        from prometheus_client import start_http_server

        start_http_server(port, addr=host, registry=self.registry)


class _Snapshot(Collector):
    def __init__(self) -> None:
        self.counters: dict[str, int] = {}
        self.newest_decision: float | None = None

    def collect(self) -> Iterator[Any]:
        joined = CounterMetricFamily(
            "closedloop_trainer_events",
            "What the trainer's joins counted, by kind (decisions, feedback_joined, duplicates, ...)",
            labels=["kind"],
        )
        for kind, value in sorted(self.counters.items()):
            joined.add_metric([kind], value)
        yield joined
        lag = GaugeMetricFamily(
            "closedloop_trainer_lag_seconds",
            "Seconds between now and the newest decision the trainer has read",
        )
        if self.newest_decision is not None:
            lag.add_metric([], max(0.0, time.time() - self.newest_decision))
        yield lag
