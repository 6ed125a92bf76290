"""Trainer join + train throughput on N logged decisions (default 1,000,000).

Writes N decision events (the benchmark use case: 10 context + 20 candidate features, 5 candidates
per decision to keep the log at ~1 GB) and feedback for ~30% of them to the embedded event log,
then times the trainer: the join (events -> examples and labels in SQL; batches of 20,000 records
a log, so a worker process reads and prepares each next batch while one is stored), closing the
windows (defaults), and training + gating one LightGBM model on every labelled example (trees by
early stopping; the gate judges the early-stopped model, the published one is refitted on all
rows), with the retrain's steps as its report records them (read, fit, judge, refit, profile).
Issue #16's targets: >= 200,000 events/s joined, <= 30 s from log to published model.

    cd bench && ../.venv/bin/python trainer_throughput.py [--decisions 1000000] [--database-url URL]
        [--events-dir DIR]  # keep the events and join them again in a later run (A/B)
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from _setup import CANDIDATE, CONTEXT, bench_config

from closedloop.contracts import (
    DecisionEvent,
    FeedbackEvent,
    LoggedCandidate,
    Topics,
    encode_decision,
    encode_feedback,
)
from closedloop.eventlog import FileEventLog, Position
from closedloop.metadata import freeze_startup_objects
from closedloop.registry import LocalModelRegistry
from closedloop.trainer import ExampleStore, FileEventSource, Trainer

START = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
JOIN_TARGET = 200_000
"""Events joined and labelled per second (issue #16)."""
TOTAL_TARGET = 30.0
"""Seconds from a log of 1,000,000 decisions to a gated, published model (issue #16)."""


def write_events(log: FileEventLog, topics: Topics, decisions: int, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    feedback_count = 0
    chunk = 20_000
    for first in range(0, decisions, chunk):
        n = min(chunk, decisions - first)
        context = rng.normal(size=(n, len(CONTEXT))).round(4)
        items = rng.normal(size=(n, 5, len(CANDIDATE))).round(4)
        clicks = rng.random(n) < 1 / (1 + np.exp(-(context[:, 0] + items[:, 0, 2] - items[:, 0, 15])))
        decided, fed = [], []
        for j in range(n):
            i = first + j
            stamp = datetime.fromtimestamp(START + i * 0.01, UTC)
            event = DecisionEvent(
                event_id=f"d{i}",
                use_case="bench",
                unit_id=f"u{i % 50_000}",
                timestamp=stamp,
                decision_type="rank",
                context=dict(zip(CONTEXT, context[j].tolist(), strict=True)),
                candidates=[
                    LoggedCandidate(
                        id=f"c{k}",
                        features=dict(zip(CANDIDATE, items[j, k].tolist(), strict=True)),
                        predictions={},
                        value=0.0,
                    )
                    for k in range(5)
                ],
                choice="c0",
                ranking=[f"c{k}" for k in range(5)],
                propensity=0.92,
                exploration={"strategy": "epsilon_greedy", "epsilon": 0.1},
                model_versions={},
                policy="default",
            )
            decided.append((f"d{i}", encode_decision(event)))
            if clicks[j]:
                feedback = FeedbackEvent(
                    event_id=f"f{i}",
                    decision_id=f"d{i}",
                    use_case="bench",
                    outcomes={"click": 1.0},
                    timestamp=stamp,
                    received_at=stamp,
                )
                fed.append((f"d{i}", encode_feedback(feedback)))
        log.append(topics.decisions, decided)
        log.append(topics.feedback, fed)
        feedback_count += len(fed)
    return feedback_count


def records_in(log: FileEventLog, topic: str) -> int:
    count, position = 0, Position(0, 0)
    while True:
        records, position = log.read(topic, position, max_records=100_000)
        if not records:
            return count
        count += len(records)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=1_000_000)
    parser.add_argument("--database-url", default=None)
    parser.add_argument(
        "--events-dir",
        type=Path,
        default=None,
        help="keep the events here and join those already there (written once for A/B runs)",
    )
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="closedloop-bench-"))
    config = bench_config(data_dir=str(directory))
    topics = Topics(config.infrastructure.topic_prefix)
    events = args.events_dir or directory / "events"
    written = events.exists()
    log = FileEventLog(events)
    if written:
        feedback = records_in(log, topics.feedback)
        print(f"joining the events already in {events} (written with --decisions {args.decisions:,})")
    else:
        started = time.perf_counter()
        feedback = write_events(log, topics, args.decisions)
        print(
            f"wrote {args.decisions:,} decisions and {feedback:,} feedback events "
            f"in {time.perf_counter() - started:.1f}s"
        )

    store = ExampleStore.from_url(args.database_url or f"sqlite:///{directory / 'metadata.db'}")
    trainer = Trainer(
        config,
        store=store,
        source=FileEventSource(log, topics),
        registry=LocalModelRegistry(directory / "registry"),
        clock=lambda: START + args.decisions * 0.01 + 3600,
        max_training_rows=args.decisions,
    )
    freeze_startup_objects()  # as `closedloop train` does once it has started
    started = time.perf_counter()
    counts = trainer.catch_up(timeout=0, max_records=20_000)
    join = time.perf_counter() - started
    events = args.decisions + feedback
    print(
        f"join: {counts['decisions']:,} examples, {counts['feedback_joined']:,} labels in {join:.1f}s "
        f"= {events / join:,.0f} events/s ({events / join / JOIN_TARGET:.2f}x the {JOIN_TARGET:,}/s wanted)"
    )
    started = time.perf_counter()
    defaults = trainer.close_windows()
    close = time.perf_counter() - started
    print(f"close windows: {defaults:,} defaults in {close:.1f}s")
    started = time.perf_counter()
    [run] = trainer.train("bench")
    train = time.perf_counter() - started
    lineage = run.report["lineage"]
    print(
        f"train + gate + publish: {lineage['rows_train']:,} rows train, {lineage['rows_holdout']:,} held out, "
        f"{train:.1f}s; {run.version} promoted={run.promoted}, held-out AUC {run.report['metrics']['auc']:.3f}"
    )
    steps = run.report.get("seconds", {})  # where the retrain's time went
    print("  " + ", ".join(f"{step} {seconds:.1f}s" for step, seconds in steps.items()))
    database = directory / "metadata.db"
    if database.exists():
        print(f"metadata database (SQLite): {database.stat().st_size / 2**20:,.0f} MiB")
    total = join + close + train
    print(
        f"total: {total:.1f}s for {args.decisions:,} decisions = {args.decisions / total:,.0f} decisions/s "
        f"end to end ({total / TOTAL_TARGET:.2f}x the {TOTAL_TARGET:.0f}s allowed for 1,000,000)"
    )
    trainer.close()
    log.close()
    shutil.rmtree(directory)  # the database and registry (the events too, unless --events-dir)


if __name__ == "__main__":
    main()
