"""A long catch-up: batches prepared in a worker process while the one before is stored, and the
feedback log read side by side with the decision log.

A trainer whose batches go through the worker stores exactly what one preparing them itself
does, on SQLite and PostgreSQL; killed (SIGKILL) mid-catch-up with its worker busy and started
again, it has every label exactly once; and reading a log appended side by side, reports do not
run ahead of their decisions (none waits in the database).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from conftest import Database, make_config, trainer_killed_once_stored
from events import activation_event, decision_event, feedback_event

from closedloop.contracts import ClosedLoopConfig, Topics
from closedloop.eventlog import FileEventLog
from closedloop.registry import LocalModelRegistry
from closedloop.trainer import ExampleStore, FileEventSource, Trainer, open_trainer
from closedloop.trainer import _preparing as preparing

pytestmark = pytest.mark.integration


def _write_log(config: ClosedLoopConfig, decisions: int, *, chunk: int) -> dict[str, float]:
    """Decisions and their reports appended side by side, a chunk at a time, with what a
    trainer must cope with: reports logged twice, a report before its decision, abandoned
    decisions; returns the labels a trainer must end with."""
    topics = Topics(config.infrastructure.topic_prefix)
    log = FileEventLog(config.infrastructure.data_path / "events")
    expected: dict[str, float] = {}
    for first in range(0, decisions, chunk):
        decided, reported = [], []
        for i in range(first, min(first + chunk, decisions)):
            decision_id = f"d{i}"
            decided.append((decision_id, decision_event(decision_id, seconds=i)))
            if i % 7 == 0:
                reported.append((decision_id, activation_event(decision_id, "abandon", seconds=i + 1)))
            elif i % 3 == 0:
                expected[decision_id] = float(i % 2)
                report = feedback_event(f"f{i}", decision_id, {"click": float(i % 2)}, seconds=i + 5)
                reported.extend([(decision_id, report), (decision_id, report)])
        if first == chunk:  # a report logged before its decision (one without reports of its own)
            later = next(i for i in range(first + chunk, decisions) if i % 7 and i % 3)
            expected[f"d{later}"] = 1.0
            early = feedback_event("early", f"d{later}", {"click": 1.0}, seconds=later + 9)
            reported.append((f"d{later}", early))
        log.append(topics.feedback, reported)
        log.append(topics.decisions, decided)
    log.close()
    return expected


def _trainer(config: ClosedLoopConfig, database: Database, tmp_path: Path, *, worker: bool) -> Trainer:
    return Trainer(
        config,
        store=ExampleStore.from_url(database.url, schema=database.schema),
        source=FileEventSource(
            FileEventLog(config.infrastructure.data_path / "events", read_only=True),
            Topics(config.infrastructure.topic_prefix),
        ),
        registry=LocalModelRegistry(tmp_path / "registry"),
        prepare_in_worker=worker,
    )


def _labels(trainer: Trainer) -> dict[str, float]:
    return {row["decision_id"]: row["value"] for row in trainer.store.labels_of("pick")}


def test_batches_prepared_in_the_worker_are_stored_as_if_prepared_here(
    tmp_path: Path, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(preparing, "WORKER_FROM_RECORDS", 1)  # every batch to the worker
    handed = []  # a spy: each batch handed to the worker process (which really prepares it)
    to_worker = preparing.BatchPreparer._worker
    monkeypatch.setattr(preparing.BatchPreparer, "_worker", lambda self: handed.append(1) or to_worker(self))
    config = make_config(tmp_path)
    expected = _write_log(config, 3000, chunk=250)
    here = Database(f"sqlite:///{tmp_path / 'prepared-here.db'}", None)
    results = []
    for worker, store in ((True, database), (False, here)):
        trainer = _trainer(config, store, tmp_path, worker=worker)
        counts = trainer.catch_up(timeout=0, max_records=400)
        results.append((counts, _labels(trainer), trainer.store.counters()))
        trainer.close()
    (in_worker, labels, counters), (in_process, labels_here, counters_here) = results
    assert (
        len(handed) == 8
    )  # every batch of the first trainer (3,000 decisions 400 at a time), none of the second
    assert labels == labels_here == expected
    assert counters == counters_here
    assert in_worker == in_process
    assert in_worker["feedback_duplicate"] == len(expected) - 1  # each report once more, but the early one
    assert in_worker["decisions_abandoned"] == 3000 // 7 + 1


def test_reports_are_read_side_by_side_with_their_decisions(tmp_path: Path, database: Database) -> None:
    """Reports are a tenth of the decisions' bytes: read a batch of records at a time from each
    log, they ran ahead and most waited in the database for their decision."""
    config = make_config(tmp_path)
    expected = _write_log(config, 3000, chunk=100)
    trainer = _trainer(config, database, tmp_path, worker=False)
    counts = trainer.catch_up(timeout=0, max_records=200)
    # Read 200 records a log at a time, 756 of the 1,715 reports waited; by bytes read through
    # each log, those of a batch's last decisions can still be a little ahead.
    assert counts["feedback_waiting"] < counts["feedback_events"] / 50
    assert _labels(trainer) == expected
    trainer.close()


TRAINER_PROCESS = """
import sys
from closedloop.contracts import parse_config
from closedloop.trainer import _preparing, open_trainer


def main():
    _preparing.WORKER_FROM_RECORDS = 1
    config = parse_config(open(sys.argv[1]).read(), environ={})
    trainer = open_trainer(config, database_schema=sys.argv[2] or None)
    while True:
        trainer.catch_up(timeout=0, max_records=300)


if __name__ == "__main__":
    main()
"""


def test_a_trainer_killed_while_its_worker_prepares_resumes_exactly_once(
    tmp_path: Path, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(tmp_path, database_url=database.url)
    expected = _write_log(config, 20_000, chunk=500)
    config_file = tmp_path / "closedloop.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    helpers = trainer_killed_once_stored(TRAINER_PROCESS, config_file, database, decisions=3000, seconds=90)
    store = ExampleStore.from_url(database.url, schema=database.schema)
    assert store.counters()["decisions"] < 20_000  # killed mid-catch-up
    store.close()
    assert len(helpers) >= 2  # the fork server and the worker (and the resource tracker)
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{pid}").exists() for pid in helpers):  # the worker sees its trainer gone
        assert time.monotonic() < deadline, "the killed trainer's worker lives on"
        time.sleep(0.1)

    monkeypatch.setattr(preparing, "WORKER_FROM_RECORDS", 1)
    trainer = open_trainer(config, database_schema=database.schema)
    trainer.catch_up(timeout=0, max_records=300)
    trainer.catch_up(timeout=0, max_records=300)  # anything more would be a double count
    counters = trainer.store.counters()
    labels = _labels(trainer)
    trainer.close()
    assert counters["decisions"] == 20_000
    assert labels == expected
    assert counters["feedback_joined"] == len(expected)


def test_a_batch_another_trainer_stored_is_read_again_from_the_stored_offsets(
    tmp_path: Path, database: Database
) -> None:
    """Two trainers on one log and database (as after a rebalance): the one that read a batch
    another already stored drops it (its offsets moved), reads on from the stored offsets, and
    does not take the end of its stale read for the end of the log."""
    config = make_config(tmp_path)
    first = _write_log(config, 600, chunk=100)
    stale = _trainer(config, database, tmp_path, worker=False)  # positioned at the start
    current = _trainer(config, database, tmp_path, worker=False)
    current.catch_up(timeout=0, max_records=10_000)
    topics = Topics(config.infrastructure.topic_prefix)
    log = FileEventLog(config.infrastructure.data_path / "events")
    log.append(topics.decisions, [(f"n{i}", decision_event(f"n{i}", seconds=700 + i)) for i in range(50)])
    log.append(
        topics.feedback,
        [(f"n{i}", feedback_event(f"g{i}", f"n{i}", {"click": 1.0}, seconds=710 + i)) for i in range(50)],
    )
    log.close()

    counts = stale.catch_up(timeout=0, max_records=10_000)  # one batch: the old events and the new

    assert stale.caught_up
    assert (counts["decisions"], counts["feedback_joined"]) == (50, 50)  # only the new ones
    assert _labels(stale) == first | {f"n{i}": 1.0 for i in range(50)}
    assert stale.store.counters()["decisions"] == 650
    stale.close()
    current.close()
