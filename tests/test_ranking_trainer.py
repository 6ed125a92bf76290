"""The trainer's examples of rankings, on a hand-made log and real SQL databases (SQLite and
PostgreSQL): one example per shown slot, with its slot as a feature; each report labels the slot
of the candidate it names; shown slots without feedback get the outcome's default; nothing
unshown is learned from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import Database, make_config
from events import T0, activation_event, feedback_event, ranking_event

from closedloop.contracts import Topics
from closedloop.eventlog import FileEventLog
from closedloop.registry import LocalModelRegistry
from closedloop.trainer import ExampleStore, FileEventSource, Trainer

pytestmark = pytest.mark.integration

PRICES = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0, "e": 5.0}
SHOWN = [("c", 0.7), ("a", 0.5), ("e", 0.9)]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def _examples(trainer: Trainer) -> dict[str, dict[str, Any]]:
    query = "SELECT decision_id, choice, propensity, slot, status FROM cl_examples"
    with trainer.store.engine.connect() as connection:
        return {row.decision_id: dict(row._mapping) for row in connection.execute(sa.text(query))}


def _labels(trainer: Trainer) -> dict[tuple[str, str], tuple[float, str]]:
    return {
        (row["decision_id"], row["outcome"]): (row["value"], row["source"])
        for row in trainer.store.labels_of("feed")
    }


def test_a_ranking_is_one_example_per_shown_slot_labelled_by_the_candidate_reported(
    tmp_path: Path, database: Database
) -> None:
    config = make_config(tmp_path)
    topics = Topics(config.infrastructure.topic_prefix)
    log = FileEventLog(tmp_path / "events")
    clock = Clock()
    trainer = Trainer(
        config,
        store=ExampleStore.from_url(database.url, schema=database.schema),
        source=FileEventSource(log, topics),
        registry=LocalModelRegistry(tmp_path / "registry"),
        clock=clock,
        lateness=60.0,
    )
    fb = "feed"
    # A click on the second slot's candidate read before its decision: it waits, candidate and all.
    log.append(
        topics.feedback,
        [("r1", feedback_event("early", "r1", {"click": 1}, seconds=60, use_case=fb, candidate="a"))],
    )
    assert trainer.catch_up(timeout=0)["feedback_waiting"] == 1
    log.append(
        topics.decisions,
        [
            ("r1", ranking_event("r1", PRICES, SHOWN)),
            ("r2", ranking_event("r2", PRICES, SHOWN, active=False)),
            ("r3", ranking_event("r3", PRICES, SHOWN)),
        ],
    )
    log.append(
        topics.feedback,
        [
            ("r1", feedback_event("f1", "r1", {"click": 1}, seconds=120, use_case=fb, candidate="e")),
            ("r1", feedback_event("f2", "r1", {"click": 0}, seconds=130, use_case=fb, candidate="e")),  # 2nd
            ("r1", feedback_event("f3", "r1", {"revenue": 4.0}, seconds=140, use_case=fb)),  # the top's
            (
                "r1",
                feedback_event("f4", "r1", {"click": 1}, seconds=150, use_case=fb, candidate="d"),
            ),  # unshown
            ("r2", activation_event("r2", "activate", seconds=200, use_case=fb)),
            ("r3", activation_event("r3", "abandon", seconds=200, use_case=fb)),
            ("r3", feedback_event("f5", "r3", {"click": 1}, seconds=210, use_case=fb, candidate="a")),
        ],
    )
    counts = trainer.catch_up(timeout=0)
    assert (counts["decisions"], counts["examples"]) == (3, 9)
    assert counts["feedback_unshown_candidate"] == 1
    assert counts["feedback_duplicate"] == 1
    assert counts["feedback_for_abandoned"] == 1

    stored = _examples(trainer)
    exported = {row["example"]: row for row in trainer.store.example_rows("feed")}
    assert sorted(stored) == sorted(f"r{d}{s}" for d in (1, 2, 3) for s in ("", "#1", "#2"))
    for slot, (candidate, propensity) in enumerate(SHOWN):
        example = stored["r1" if slot == 0 else f"r1#{slot}"]
        assert (example["choice"], example["propensity"], example["slot"]) == (candidate, propensity, slot)
        row = exported["r1" if slot == 0 else f"r1#{slot}"]
        features = {
            name.removeprefix("feature."): v for name, v in row.items() if name.startswith("feature.")
        }
        assert features == {
            "country": "de",
            "hour": 9.0,
            "price": PRICES[candidate],
            "topic": "a",
            "slot": slot,
        }
    assert {stored[k]["status"] for k in ("r2", "r2#1", "r2#2")} == {"active"}  # activated, every slot
    assert {stored[k]["status"] for k in ("r3", "r3#1", "r3#2")} == {"abandoned"}

    clock.now = T0 + 2 * 3600
    trainer.close_windows()
    labels = _labels(trainer)
    expected = {
        ("r1", "click"): (0.0, "default"),
        ("r1", "revenue"): (4.0, "feedback"),
        ("r1#1", "click"): (1.0, "feedback"),  # the early report, about the second slot
        ("r1#1", "revenue"): (0.0, "default"),
        ("r1#2", "click"): (1.0, "feedback"),  # the first of two reports counts
        ("r1#2", "revenue"): (0.0, "default"),
        **{(f"r2{s}", o): (0.0, "default") for s in ("", "#1", "#2") for o in ("click", "revenue")},
    }
    assert labels == expected
    assert trainer.store.label_counts("feed") == {"click": 6, "revenue": 6}
    trainer.close()
    log.close()
