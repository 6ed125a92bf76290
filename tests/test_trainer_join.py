"""The trainer's join on real SQL databases (SQLite and PostgreSQL): early, late, duplicate and
missing feedback, each counted exactly once; and the gate refusing a worse model."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from conftest import Database, make_config
from events import T0, activation_event, decision_event, feedback_event

from closedloop.contracts import RetrainTrigger, Topics
from closedloop.eventlog import FileEventLog
from closedloop.registry import LocalModelRegistry
from closedloop.trainer import ExampleStore, FileEventSource, Trainer

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def _trainer(
    tmp_path: Path, database: Database, log: FileEventLog, clock: Clock, *, max_drift: float | None = None
) -> Trainer:
    config = make_config(tmp_path)
    if max_drift is not None:
        pick = config.use_cases["pick"]
        promotion = pick.promotion.model_copy(update={"max_drift": max_drift})
        changed = pick.model_copy(update={"promotion": promotion})
        config = config.model_copy(update={"use_cases": {**config.use_cases, "pick": changed}})
    return Trainer(
        config,
        store=ExampleStore.from_url(database.url, schema=database.schema),
        source=FileEventSource(log, Topics(config.infrastructure.topic_prefix)),
        registry=LocalModelRegistry(tmp_path / "registry"),
        clock=clock,
        lateness=60.0,
    )


def _labels(trainer: Trainer) -> dict[str, tuple[float, str]]:
    return {row["decision_id"]: (row["value"], row["source"]) for row in trainer.store.labels_of("pick")}


def test_feedback_is_joined_once_within_its_window_and_silence_gets_the_default(
    tmp_path: Path, database: Database
) -> None:
    topics = Topics("closedloop")
    log = FileEventLog(tmp_path / "events")
    clock = Clock()
    trainer = _trainer(tmp_path, database, log, clock)

    # Feedback read before its decision: it waits for it. The same report redelivered, in the same
    # batch or a later one, is a duplicate while it waits. A second report of the outcome waits too:
    # which one counts (the first inside its window) is known once the decision's time is.
    early = feedback_event("f-early", "early", {"click": 1}, seconds=300)
    log.append(topics.feedback, [("early", early), ("early", early)])
    counts = trainer.catch_up(timeout=0)
    assert (counts["feedback_waiting"], counts["feedback_duplicate"]) == (1, 1)
    log.append(topics.feedback, [("early", early)])
    counts = trainer.catch_up(timeout=0)
    assert (counts["feedback_waiting"], counts["feedback_duplicate"]) == (0, 1)
    log.append(topics.feedback, [("early", feedback_event("f-early-2", "early", {"click": 0}, seconds=310))])
    counts = trainer.catch_up(timeout=0)
    assert (counts["feedback_waiting"], counts["feedback_duplicate"]) == (1, 0)

    log.append(topics.decisions, [(d, decision_event(d)) for d in ("d1", "late", "silent", "early")])
    first = feedback_event("f1", "d1", {"click": 1}, seconds=600)
    log.append(
        topics.feedback,
        [
            ("d1", first),
            ("d1", first),  # redelivered: the same event twice
            ("d1", feedback_event("f1-again", "d1", {"click": 0}, seconds=700)),  # a second report
            ("late", feedback_event("f-late", "late", {"click": 1}, seconds=45 * 60)),  # window: 30m
        ],
    )
    counts = trainer.catch_up(timeout=0)
    assert counts["feedback_joined"] == 2  # d1, and the early one now that its decision arrived
    assert counts["feedback_duplicate"] == 3  # d1 redelivered, d1's second report, early's second
    assert counts["feedback_after_window"] == 1

    clock.now = T0 + 20 * 60  # windows still open: no defaults yet
    assert trainer.close_windows() == 0
    assert _labels(trainer) == {"d1": (1.0, "feedback"), "early": (1.0, "feedback")}

    clock.now = T0 + 30 * 60 + 61  # window and lateness over
    assert trainer.close_windows() == 2
    assert trainer.close_windows() == 0  # closing again applies nothing twice
    assert _labels(trainer) == {
        "d1": (1.0, "feedback"),
        "early": (1.0, "feedback"),
        "late": (0.0, "default"),
        "silent": (0.0, "default"),
    }
    counters = trainer.store.counters()
    assert counters["decisions"] == 4
    assert counters["defaults_applied"] == 2
    trainer.close()
    log.close()


def test_a_redelivered_decision_is_judged_by_what_the_database_holds(
    tmp_path: Path, database: Database
) -> None:
    """A batch whose decisions are all new labels their reports from the batch itself; one that
    redelivers a stored decision must not: the stored one may have been abandoned or labelled
    since, which its logged event does not say."""
    topics = Topics("closedloop")
    log = FileEventLog(tmp_path / "events")
    trainer = _trainer(tmp_path, database, log, Clock())
    log.append(topics.decisions, [(d, decision_event(d)) for d in ("gone", "clicked")])
    log.append(
        topics.feedback,
        [
            ("gone", activation_event("gone", "abandon", seconds=5)),
            ("clicked", feedback_event("f-1", "clicked", {"click": 1}, seconds=60)),
        ],
    )
    counts = trainer.catch_up(timeout=0)
    assert (counts["decisions_abandoned"], counts["feedback_joined"]) == (1, 1)

    # Both decisions again (a producer's retry), a new one, and reports for all three.
    log.append(topics.decisions, [(d, decision_event(d)) for d in ("gone", "clicked", "new")])
    log.append(
        topics.feedback,
        [
            ("gone", feedback_event("f-2", "gone", {"click": 1}, seconds=70)),
            ("clicked", feedback_event("f-3", "clicked", {"click": 0}, seconds=80)),
            ("new", feedback_event("f-4", "new", {"click": 1}, seconds=90)),
        ],
    )
    counts = trainer.catch_up(timeout=0)
    assert counts["feedback_for_abandoned"] == 1
    assert counts["feedback_duplicate"] == 1  # clicked has its label
    assert counts["feedback_joined"] == 1  # new
    assert _labels(trainer) == {"clicked": (1.0, "feedback"), "new": (1.0, "feedback")}
    trainer.close()
    log.close()


def test_the_retrain_trigger_counts_only_labels_whose_window_closed(
    tmp_path: Path, database: Database
) -> None:
    """Early clicks inside an open window are not examples yet (the no-clicks are still to come),
    so they do not fire ``min_new_examples``; once the window closes, every decision counts."""
    topics = Topics("closedloop")
    log = FileEventLog(tmp_path / "events")
    clock = Clock()
    trainer = _trainer(tmp_path, database, log, clock)
    pick = trainer.config.use_cases["pick"]
    use_cases = {
        **trainer.config.use_cases,
        "pick": pick.model_copy(update={"retrain": RetrainTrigger(min_new_examples=4)}),
    }
    trainer.config = trainer.config.model_copy(update={"use_cases": use_cases})
    decisions = [f"d{i}" for i in range(6)]
    log.append(topics.decisions, [(d, decision_event(d, seconds=i)) for i, d in enumerate(decisions)])
    log.append(
        topics.feedback, [(d, feedback_event(f"f-{d}", d, {"click": 1}, seconds=60)) for d in decisions[:5]]
    )
    trainer.catch_up(timeout=0)

    clock.now = T0 + 10 * 60  # five clicks stored, every window (30 minutes) still open
    trainer.close_windows()
    assert not trainer.due("pick")

    clock.now = T0 + 32 * 60  # windows and lateness over: five clicks and one default
    assert trainer.close_windows() == 1
    assert trainer.due("pick")
    trainer.close()
    log.close()


def _logged_pattern(
    log: FileEventLog,
    decisions: int,
    seed: int = 0,
    *,
    first: int = 0,
    price_shift: float = 0.0,
    prefix: str = "d",
) -> None:
    """Decisions on ``pick`` whose click depends on the chosen candidate's price (numbered from
    ``first``, a second apart; ``price_shift`` moves the prices, not the click's dependence)."""
    rng = np.random.default_rng(seed)
    topics = Topics("closedloop")
    decided, clicked = [], []
    for i in range(first, first + decisions):
        price = float(rng.uniform(0, 10)) + price_shift
        decision_id = f"{prefix}{i}"
        decided.append(
            (decision_id, decision_event(decision_id, seconds=i, candidates={"a": {"price": price}}))
        )
        if rng.random() < 1 / (1 + np.exp(-(price - price_shift - 5))):
            report = feedback_event(f"f{decision_id}", decision_id, {"click": 1}, seconds=i + 5)
            clicked.append((decision_id, report))
    log.append(topics.decisions, decided)
    log.append(topics.feedback, clicked)


def test_the_gate_refuses_a_model_trained_on_shuffled_labels(tmp_path: Path, database: Database) -> None:
    log = FileEventLog(tmp_path / "events")
    clock = Clock()
    trainer = _trainer(tmp_path, database, log, clock)
    _logged_pattern(log, 3000)
    clock.now = T0 + 3000 + 30 * 60 + 61
    first = trainer.run_once(force=True, timeout=0)
    [pick_click] = [run for run in first.runs if run.use_case == "pick"]
    assert pick_click.promoted, pick_click.reason
    assert pick_click.report["metrics"]["auc"] > 0.8
    champion = trainer.registry.champion("pick", "click")
    assert champion == pick_click.version
    # The published champion learned every row, its gate's held-out ones too: a model trained on
    # the same data again is not judged against it on rows it has seen (that would flatter it).
    [equal] = trainer.train("pick")
    assert equal.promoted, equal.reason
    assert list(equal.report["gate"]["paired_loss_differences"]) == ["constant baseline"]
    assert pick_click.report["lineage"]["refit_on_all_rows"] is True
    champion = equal.version

    # Shuffle the labels of the training part (the earliest 80%); the held-out rows stay true.
    labels = sa.Table("cl_labels", sa.MetaData(), autoload_with=trainer.store.engine)
    with trainer.store.engine.begin() as connection:
        rows = connection.execute(sa.select(labels.c.decision_id, labels.c.value)).all()
        training = sorted(rows, key=lambda r: int(r.decision_id[1:]))[:2400]
        shuffled = np.random.default_rng(1).permutation([r.value for r in training])
        connection.execute(
            sa.update(labels)
            .where(labels.c.decision_id == sa.bindparam("id"))
            .values(value=sa.bindparam("v")),
            [{"id": r.decision_id, "v": float(v)} for r, v in zip(training, shuffled, strict=True)],
        )
    trainer.close()  # its cache of encoded rows holds the true labels: edits behind its back are unseen
    trainer = _trainer(tmp_path, database, log, clock)
    started = time.perf_counter()
    [worse] = trainer.train("pick")
    assert 0 < sum(worse.report["seconds"].values()) <= time.perf_counter() - started
    assert not worse.promoted
    assert "not credibly better than the constant baseline" in worse.reason
    assert trainer.registry.champion("pick", "click") == champion
    versions = {v.version: v.metadata for v in trainer.registry.versions("pick", "click")}
    assert versions[worse.version or ""]["status"] == "rejected"
    assert versions[champion]["lineage"]["rows_train"] == 2400
    # the judged model is the one early stopping kept: it learned the earliest 85% of the 2,400
    assert versions[champion]["lineage"]["rows_judged_model"] == 2040
    trainer.close()
    log.close()


def test_a_model_needs_enough_held_out_examples(tmp_path: Path, database: Database) -> None:
    log = FileEventLog(tmp_path / "events")
    clock = Clock()
    trainer = _trainer(tmp_path, database, log, clock)
    _logged_pattern(log, 400)  # 80 held out; the gate asks for 200
    clock.now = T0 + 400 + 30 * 60 + 61
    [run] = [r for r in trainer.run_once(force=True, timeout=0).runs if r.use_case == "pick"]
    assert not run.promoted
    assert run.version is None
    assert "min_examples=200" in run.reason
    assert trainer.registry.champion("pick", "click") is None
    trainer.close()
    log.close()


def test_reports_left_waiting_by_an_earlier_version_still_label_their_decision(
    tmp_path: Path, database: Database
) -> None:
    """Stores of 0.1 kept one waiting report per (decision, outcome) in cl_pending_feedback; opening
    such a store moves them into today's table, and the decision's arrival joins them."""
    from closedloop.metadata import open_database

    engine = open_database(database.url, schema=database.schema)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "CREATE TABLE cl_pending_feedback (decision_id VARCHAR(128), outcome VARCHAR(64), "
                "value FLOAT, feedback_id VARCHAR(128), happened_at FLOAT,"
                " PRIMARY KEY (decision_id, outcome))"
            )
        )
        connection.execute(
            sa.text("INSERT INTO cl_pending_feedback VALUES ('old', 'click', 1.0, 'f-old', :at)"),
            {"at": T0 + 60},
        )
    engine.dispose()
    topics = Topics("closedloop")
    log = FileEventLog(tmp_path / "events")
    trainer = _trainer(tmp_path, database, log, Clock())
    assert "cl_pending_feedback" not in sa.inspect(trainer.store.engine).get_table_names()
    log.append(topics.decisions, [("old", decision_event("old"))])
    assert trainer.catch_up(timeout=0)["feedback_joined"] == 1
    assert _labels(trainer) == {"old": (1.0, "feedback")}
    trainer.close()
    log.close()


def test_reports_whose_decision_never_comes_expire_after_their_window(
    tmp_path: Path, database: Database
) -> None:
    topics = Topics("closedloop")
    log = FileEventLog(tmp_path / "events")
    clock = Clock()
    trainer = _trainer(tmp_path, database, log, clock)
    log.append(
        topics.feedback,
        [
            (f"never-{i}", feedback_event(f"f{i}", f"never-{i}", {"click": 1}, seconds=i * 60))
            for i in range(10)
        ],
    )
    assert trainer.catch_up(timeout=0)["feedback_waiting"] == 10
    clock.now = T0 + 60 + 30 * 60 + 60 + 1  # lateness 60 s: the first two are past click's 30 m window
    trainer.close_windows()
    assert trainer.store.counters()["pending_expired"] == 2
    clock.now = T0 + 10 * 60 + 30 * 60 + 61
    trainer.close_windows()
    assert trainer.store.counters()["pending_expired"] == 10
    trainer.close()
    log.close()


def test_examples_stored_by_an_earlier_version_count_as_active(tmp_path: Path, database: Database) -> None:
    """Stores before activation had no status column: opening one adds it, every example active,
    so that its open windows still get their defaults."""
    from closedloop.metadata import open_database

    engine = open_database(database.url, schema=database.schema)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "CREATE TABLE cl_examples (decision_id VARCHAR(128) PRIMARY KEY,"
                " use_case VARCHAR(64) NOT NULL, decided_at FLOAT NOT NULL, features TEXT NOT NULL,"
                " choice VARCHAR(256),"
                " propensity FLOAT NOT NULL, policy VARCHAR(16) NOT NULL, arm VARCHAR(64),"
                " model_versions TEXT NOT NULL, closed BOOLEAN NOT NULL)"
            )
        )
        connection.execute(
            sa.text(
                "INSERT INTO cl_examples VALUES"
                " ('old', 'pick', :at, '{}', 'a', 0.5, 'default', NULL, '{}', false)"
            ),
            {"at": T0},
        )
    engine.dispose()
    clock = Clock()
    log = FileEventLog(tmp_path / "events")
    trainer = _trainer(tmp_path, database, log, clock)
    clock.now = T0 + 3 * 3600
    trainer.close_windows()
    assert _labels(trainer) == {"old": (0.0, "default")}
    trainer.close()
    log.close()


def test_labels_stored_by_an_earlier_version_get_their_decision_time_and_block(
    tmp_path: Path, database: Database
) -> None:
    """Labels before 0.2 had no copy of their example's time and feature block, and the examples'
    index of open windows held every row: opening such a store adds the columns filled from the
    examples and today's indexes (dropping the old ones), and a retrain reads exactly the rows it
    read before."""
    log = FileEventLog(tmp_path / "events")
    clock = Clock()
    trainer = _trainer(tmp_path, database, log, clock)
    _logged_pattern(log, 600)
    clock.now = T0 + 600 + 30 * 60 + 61
    trainer.catch_up(timeout=0)
    trainer.close_windows()
    before = trainer.store.labelled_examples("pick", "click", limit=10_000)
    counts = trainer.store.label_counts("pick")
    assert counts == {"click": 600}
    with trainer.store.transaction() as connection:  # the table as 0.1 made it, with its labels
        old = (
            "decision_id VARCHAR(128), outcome VARCHAR(64), use_case VARCHAR(64) NOT NULL,"
            " value FLOAT NOT NULL, source VARCHAR(16) NOT NULL, feedback_id VARCHAR(128),"
            " labelled_at FLOAT NOT NULL, PRIMARY KEY (decision_id, outcome)"
        )
        columns = "decision_id, outcome, use_case, value, source, feedback_id, labelled_at"
        connection.execute(sa.text(f"CREATE TABLE old_labels ({old})"))
        connection.execute(sa.text(f"INSERT INTO old_labels SELECT {columns} FROM cl_labels"))
        connection.execute(sa.text("DROP TABLE cl_labels"))
        connection.execute(sa.text(f"CREATE TABLE cl_labels ({old})"))
        connection.execute(sa.text(f"INSERT INTO cl_labels SELECT {columns} FROM old_labels"))
        connection.execute(sa.text("DROP TABLE old_labels"))
        connection.execute(sa.text("CREATE INDEX ix_cl_labels_use_case ON cl_labels (use_case, outcome)"))
        connection.execute(sa.text("DROP INDEX ix_cl_examples_unclosed"))
        connection.execute(sa.text("DROP INDEX ix_cl_examples_decided"))
        connection.execute(sa.text("CREATE INDEX ix_cl_examples_time ON cl_examples (use_case, decided_at)"))
        connection.execute(
            sa.text("CREATE INDEX ix_cl_examples_open ON cl_examples (use_case, closed, decided_at)")
        )
    trainer.close()

    reopened = _trainer(tmp_path, database, log, clock)
    indexes = {i["name"] for i in sa.inspect(reopened.store.engine).get_indexes("cl_labels", database.schema)}
    assert "ix_cl_labels_time" in indexes
    assert "ix_cl_labels_use_case" not in indexes
    indexes = {
        i["name"] for i in sa.inspect(reopened.store.engine).get_indexes("cl_examples", database.schema)
    }
    assert {"ix_cl_examples_unclosed", "ix_cl_examples_decided"} <= indexes
    assert not {"ix_cl_examples_open", "ix_cl_examples_time"} & indexes
    assert reopened.store.label_counts("pick") == counts
    after = reopened.store.labelled_examples("pick", "click", limit=10_000)
    np.testing.assert_array_equal(after.decided_at, before.decided_at)
    np.testing.assert_array_equal(after.values, before.values)
    assert after.features.keys() == before.features.keys()
    for name, values in before.features.items():
        np.testing.assert_array_equal(after.features[name], values)
    reopened.close()
    log.close()


def test_closing_windows_reads_only_the_open_examples_index(tmp_path: Path) -> None:
    """SQLite, which keeps no statistics, once took the index of every example's time to close
    windows, and would read the whole history at each closing: its plans must name the index of
    open windows alone."""
    log = FileEventLog(tmp_path / "events")
    clock = Clock()
    trainer = _trainer(tmp_path, Database(f"sqlite:///{tmp_path / 'metadata.db'}", None), log, clock)
    _logged_pattern(log, 50)
    trainer.catch_up(timeout=0)
    statements: list[tuple[str, object]] = []

    def keep(_c: object, _cursor: object, statement: str, parameters: object, *_rest: object) -> None:
        if statement.startswith(("UPDATE cl_examples", "INSERT INTO cl_labels")) and "closed" in statement:
            statements.append((statement, parameters))

    sa.event.listen(trainer.store.engine, "before_cursor_execute", keep)
    clock.now = T0 + 50 + 30 * 60 + 61
    assert trainer.close_windows() > 0
    kinds = {statement.split()[0] for statement, _ in statements}
    assert kinds == {"INSERT", "UPDATE"}  # the defaults, and marking the examples closed
    with trainer.store.engine.connect() as connection:
        for statement, parameters in statements:
            plan = connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
            [examples] = [step[-1] for step in plan if " cl_examples " in step[-1]]
            assert examples.endswith("USING INDEX ix_cl_examples_unclosed (use_case=? AND decided_at<?)"), (
                plan
            )
    trainer.close()
    log.close()


@pytest.mark.parametrize(("shift", "drifts"), [(0.0, False), (6.0, True)])
def test_drift_of_the_newest_rows_is_measured_and_gates_when_asked(
    tmp_path: Path, database: Database, shift: float, drifts: bool
) -> None:
    """A champion's lineage profiles its training rows (missing rate, range, histogram) and ranks
    its features by gain; the next run measures the newest rows' PSI against that profile, and with
    ``max_drift`` refuses a model whose data moved."""
    log = FileEventLog(tmp_path / "events")
    clock = Clock()
    trainer = _trainer(tmp_path, database, log, clock, max_drift=0.25)
    _logged_pattern(log, 3000)
    clock.now = T0 + 3000 + 30 * 60 + 61
    [first] = [run for run in trainer.run_once(force=True, timeout=0).runs if run.use_case == "pick"]
    assert first.promoted, first.reason
    price = first.report["data_profile"]["price"]
    assert price["missing_rate"] == 0.0
    assert 0 <= price["min"] < price["p5"] < price["p95"] < price["max"] <= 10
    assert max(first.report["gain_importance"], key=first.report["gain_importance"].get) == "price"

    _logged_pattern(log, 3000, seed=1, first=3000, price_shift=shift)
    clock.now = T0 + 6000 + 30 * 60 + 61
    [second] = [run for run in trainer.run_once(force=True, timeout=0).runs if run.use_case == "pick"]
    psi = second.report["drift_psi"]["price"]
    if drifts:
        assert psi > 1.0
        assert not second.promoted
        assert "data drift: PSI of price" in second.reason
    else:
        assert psi < 0.1
        assert second.promoted, second.reason
    trainer.close()
    log.close()


def test_a_retrain_reads_only_the_new_rows_and_learns_what_a_full_read_would(
    tmp_path: Path, database: Database
) -> None:
    log = FileEventLog(tmp_path / "events")
    clock = Clock()
    trainer = _trainer(tmp_path, database, log, clock)
    _logged_pattern(log, 3000)
    clock.now = T0 + 3000 + 30 * 60 + 61
    [first] = [run for run in trainer.run_once(force=True, timeout=0).runs if run.use_case == "pick"]
    assert first.report["lineage"]["incremental_read"] is False
    _logged_pattern(log, 1000, seed=2, first=3100)  # decided after the first run's window mark
    clock.now = T0 + 4100 + 30 * 60 + 61
    [second] = [run for run in trainer.run_once(force=True, timeout=0).runs if run.use_case == "pick"]
    assert second.report["lineage"]["incremental_read"] is True
    assert second.report["lineage"]["rows_read"] == 1000
    # A decision logged late with a time before the mark (an outbox shipping a backlog) is missed
    # by the rows after the mark: the count of final labels tells, and everything is read again.
    _logged_pattern(log, 10, seed=3, first=4090, prefix="late")
    [third] = [run for run in trainer.run_once(force=True, timeout=0).runs if run.use_case == "pick"]
    assert third.report["lineage"]["incremental_read"] is False
    assert third.report["lineage"]["rows_read"] == 4010
    trainer.close()

    fresh = _trainer(tmp_path, database, log, clock)  # no cache: it reads every row
    [again] = fresh.train("pick")[:1]
    assert again.report["lineage"]["incremental_read"] is False
    assert again.report["lineage"]["rows_read"] == 4010
    assert again.report["metrics"] == third.report["metrics"]
    assert again.report["data_profile"] == third.report["data_profile"]
    fresh.close()
    log.close()
