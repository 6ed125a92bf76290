"""One attribution rule, two joins: the trainer's (SQL, batch by batch) and the evaluator's (numpy,
in one pass) read the same events and must give every decision's outcomes the same labels.

The events are built to hit every case the rule has: reports inside and after the window (of
each outcome), repeated reports with other values, feedback logged before its decision (and
read in an earlier batch), orphan feedback whose decision is in the log after all, feedback for
decisions never made, silence, and events logged twice (a retry after a crash).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import Database, make_config
from events import T0, activation_event, decision_event, feedback_event

from closedloop.contracts import Attribution, Topics
from closedloop.evaluation._hashing import id_hash
from closedloop.evaluation._logged import Gatherer
from closedloop.eventlog import FileEventLog, Position
from closedloop.registry import LocalModelRegistry
from closedloop.trainer import ExampleStore, FileEventSource, Trainer

pytestmark = pytest.mark.integration

USE_CASE = "feed"  # outcomes: click (binary, 30 min window), revenue (continuous, 1 h window)
DECISIONS = 400


def _events(rng: np.random.Generator) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    ids = [uuid.UUID(int=int(rng.integers(2**62)) << 64 | i).hex for i in range(DECISIONS)]
    decisions = [(d, decision_event(d, seconds=i * 10.0, use_case=USE_CASE)) for i, d in enumerate(ids)]
    feedback: list[tuple[tuple[int, float], tuple[str, bytes]]] = []  # (log order key, record)
    for i, decision_id in enumerate(ids):
        decided = i * 10.0
        for outcome, window in (("click", 1800.0), ("revenue", 3600.0)):
            for _ in range(int(rng.choice([0, 1, 1, 2, 3]))):  # silence, one report, repeats
                delay = float(rng.choice([rng.uniform(-60, window), rng.uniform(window, 2 * window)]))
                value = float(rng.integers(2)) if outcome == "click" else float(rng.uniform(0, 50))
                orphan = rng.random() < 0.1  # the service did not know the decision when told
                record = feedback_event(
                    uuid.uuid4().hex,
                    decision_id,
                    {outcome: value},
                    seconds=decided + delay,
                    use_case=None if orphan else USE_CASE,
                )
                # Some reports reach the log well before their decision is read.
                order = decided - 3000 if rng.random() < 0.15 else decided + max(delay, 0)
                feedback.append(((int(order), float(rng.random())), (decision_id, record)))
    for k in range(20):  # feedback for decisions that were never made
        record = feedback_event(f"nf{k}", f"never-{k}", {"click": 1.0}, seconds=k * 50.0)
        feedback.append(((k * 50, 0.0), (f"never-{k}", record)))
    # Retries after a crash log an event twice: the same decision, the same report, later on.
    replays = [(key, record) for key, record in feedback if rng.random() < 0.05]
    feedback.extend(((key[0] + 600, 1.0), record) for key, record in replays)
    decisions += [decisions[i] for i in rng.choice(len(decisions), size=20, replace=False)]
    return decisions, [record for _, record in sorted(feedback)]


def _trainer_labels(
    tmp_path: Path, database: Database, log: FileEventLog, as_of: float
) -> dict[tuple[str, str], float]:
    config = make_config(tmp_path)
    trainer = Trainer(
        config,
        store=ExampleStore.from_url(database.url, schema=database.schema),
        source=FileEventSource(log, Topics(config.infrastructure.topic_prefix)),
        registry=LocalModelRegistry(tmp_path / "registry"),
        clock=lambda: as_of,
        lateness=0.0,
    )
    trainer.catch_up(timeout=0, max_records=50)  # small batches: early feedback waits
    trainer.close_windows()
    labels = {(row["decision_id"], row["outcome"]): row["value"] for row in trainer.store.labels_of(USE_CASE)}
    trainer.close()
    return labels


def _evaluator_labels(
    tmp_path: Path, log: FileEventLog, topics: Topics, as_of: float
) -> dict[int, np.ndarray]:
    use_case = make_config(tmp_path).use_cases[USE_CASE]
    gatherer = Gatherer(USE_CASE, use_case, None)
    gatherer.add_decisions(log.read(topics.decisions, Position(0, 0), max_records=10**6)[0])
    gatherer.add_feedback(log.read(topics.feedback, Position(0, 0), max_records=10**6)[0])
    data = gatherer.finish(as_of=as_of)
    assert len(data.decision) == DECISIONS  # each decision once, though some were logged twice
    return {int(h): row for h, row in zip(data.decision, data.outcomes, strict=True)}


def test_the_trainer_and_the_evaluator_label_every_decision_alike(tmp_path: Path, database: Database) -> None:
    topics = Topics("closedloop")
    log = FileEventLog(tmp_path / "events")
    decisions, feedback = _events(np.random.default_rng(11))
    # Interleave the topics as a live service would: feedback of early decisions first.
    log.append(topics.feedback, feedback[: len(feedback) // 3])
    log.append(topics.decisions, decisions)
    log.append(topics.feedback, feedback[len(feedback) // 3 :])
    attribution = Attribution.of(make_config(tmp_path).use_cases[USE_CASE])
    as_of = T0 + DECISIONS * 10.0 + attribution.longest_window + 1

    trainer = _trainer_labels(tmp_path, database, log, as_of)
    evaluator = _evaluator_labels(tmp_path, log, topics, as_of)

    assert len(evaluator) == DECISIONS  # every window closed at as_of
    disagreements = []
    for decision_id, _ in decisions:
        row = evaluator[id_hash(decision_id)]
        for position, outcome in enumerate(attribution.windows):
            if trainer[(decision_id, outcome)] != pytest.approx(row[position]):
                disagreements.append((decision_id, outcome, trainer[(decision_id, outcome)], row[position]))
    assert disagreements == []
    # The events did exercise the rule: reports that count, that came too late, and silence.
    values = np.array([trainer[(d, "revenue")] for d, _ in decisions])
    assert 0.2 < np.mean(values > 0) < 0.9
    log.close()


def _activation_events(
    rng: np.random.Generator,
) -> tuple[list[tuple[str, bytes]], list[tuple[str, bytes]], set[str]]:
    """Decisions logged inactive or active, activations and abandonments logged before and after
    their decision, reports of inactive and abandoned ones; and the ids that must count."""
    decisions, late, early, counting = [], [], [], set()
    for i in range(DECISIONS):
        decision_id = uuid.UUID(int=int(rng.integers(2**62)) << 64 | i).hex
        decided = i * 10.0
        active = bool(rng.random() < 0.5)
        decisions.append(
            (decision_id, decision_event(decision_id, seconds=decided, use_case=USE_CASE, active=active))
        )
        activated = reported = abandoned = False
        events = []
        if not active and rng.random() < 0.4:
            activated = True
            events.append(activation_event(decision_id, "activate", seconds=decided + 5, use_case=USE_CASE))
        if rng.random() < 0.3:
            reported = True
            delay = float(rng.uniform(0, 4000))  # inside the window or after it: either activates
            events.append(
                feedback_event(
                    uuid.uuid4().hex, decision_id, {"click": 1.0}, seconds=decided + delay, use_case=USE_CASE
                )
            )
        if rng.random() < 0.15:
            abandoned = True
            events.append(activation_event(decision_id, "abandon", seconds=decided + 1, use_case=USE_CASE))
        for event in events:  # some reach the log before their decision is read
            (early if rng.random() < 0.3 else late).append((decision_id, event))
        if not abandoned and (active or activated or reported):
            counting.add(decision_id)
    return decisions, early + late, counting


def test_the_trainer_and_the_evaluator_count_the_same_decisions_as_active(
    tmp_path: Path, database: Database
) -> None:
    topics = Topics("closedloop")
    log = FileEventLog(tmp_path / "events")
    decisions, feedback, counting = _activation_events(np.random.default_rng(5))
    early = len(feedback) // 3
    log.append(topics.feedback, feedback[:early])
    log.append(topics.decisions, decisions)
    log.append(topics.feedback, feedback[early:])
    attribution = Attribution.of(make_config(tmp_path).use_cases[USE_CASE])
    as_of = T0 + DECISIONS * 10.0 + attribution.longest_window + 1

    trainer = _trainer_labels(tmp_path, database, log, as_of)
    use_case = make_config(tmp_path).use_cases[USE_CASE]
    gatherer = Gatherer(USE_CASE, use_case, None)
    gatherer.add_decisions(log.read(topics.decisions, Position(0, 0), max_records=10**6)[0])
    gatherer.add_feedback(log.read(topics.feedback, Position(0, 0), max_records=10**6)[0])
    data = gatherer.finish(as_of=as_of)

    assert 0.3 * DECISIONS < len(counting) < 0.9 * DECISIONS  # the events exercise every case
    assert {d for d, _ in trainer} == counting
    assert set(data.decision.tolist()) == {id_hash(d) for d in counting}
    assert data.abandoned + data.inactive + len(counting) == DECISIONS
    evaluator = {int(h): row for h, row in zip(data.decision, data.outcomes, strict=True)}
    for decision_id in counting:  # every outcome of a counted decision labelled, alike
        for position, outcome in enumerate(attribution.windows):
            assert trainer[(decision_id, outcome)] == pytest.approx(evaluator[id_hash(decision_id)][position])
    log.close()
