"""`closedloop train --once` and `closedloop models` on embedded stores, as a user runs them."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import yaml
from conftest import make_config
from events import T0, decision_event, feedback_event
from typer.testing import CliRunner

from closedloop.cli import app
from closedloop.contracts import Topics
from closedloop.eventlog import FileEventLog


def test_train_once_reads_the_event_files_trains_and_models_lists_the_lineage(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    config_file = tmp_path / "closedloop.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    topics = Topics(config.infrastructure.topic_prefix)
    log = FileEventLog(config.infrastructure.data_path / "events")  # what a service process wrote
    rng = np.random.default_rng(0)
    prices = rng.uniform(0, 10, size=2000)
    log.append(
        topics.decisions,
        [
            (f"d{i}", decision_event(f"d{i}", seconds=i, candidates={"a": {"price": p}}))
            for i, p in enumerate(prices)
        ],
    )
    log.append(
        topics.feedback,
        [
            (f"d{i}", feedback_event(f"f{i}", f"d{i}", {"click": 1}, seconds=i + 1))
            for i, p in enumerate(prices)
            if rng.random() < 1 / (1 + np.exp(-(p - 5)))
        ],
    )
    log.close()

    runner = CliRunner()
    trained = runner.invoke(
        app, ["train", "--once", "--force", "--json", "--config", str(config_file)], env={}
    )
    assert trained.exit_code == 0, trained.output
    cycle = json.loads(trained.stdout)
    assert cycle["consumed"]["decisions"] == 2000
    assert {(r["use_case"], r["outcome"]) for r in cycle["runs"] if r["promoted"]} == {("pick", "click")}
    listed = runner.invoke(app, ["models", "--json", "--config", str(config_file)], env={})
    assert listed.exit_code == 0, listed.output
    models = json.loads(listed.stdout)
    entry = models["use_cases"]["pick"]["click"]
    assert entry["champion"].startswith("v1-")
    assert entry["pinned"] is None
    [version] = entry["versions"]
    assert version["published"].endswith("+00:00")  # ISO 8601, not an epoch float
    assert (
        version["metadata"]["lineage"]["rows_train"] + version["metadata"]["lineage"]["rows_holdout"] == 2000
    )
    assert version["metadata"]["metrics"]["auc"] > 0.8
    seconds = version["metadata"]["seconds"]  # where the run's time went
    assert list(seconds) == ["read", "fit", "judge", "refit", "profile"]
    assert all(value >= 0 for value in seconds.values())
    runs = {(run["use_case"], run["outcome"]): run for run in models["training_runs"]}
    assert runs[("pick", "click")]["promoted"] is True
    assert runs[("feed", "click")]["version"] is None  # no data for it: recorded, not trained
    table = runner.invoke(app, ["models", "--config", str(config_file)], env={}).stdout
    assert entry["champion"] in table
    assert "champion" in table
    assert "auc" in table


def test_train_and_status_say_why_nothing_trained(tmp_path: Path) -> None:
    """Decisions inside their windows: no final label yet, and the command says so and when."""
    config = make_config(tmp_path)
    config_file = tmp_path / "closedloop.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    topics = Topics(config.infrastructure.topic_prefix)
    log = FileEventLog(config.infrastructure.data_path / "events")
    now = time.time() - T0  # decided just now: inside the 30-minute click window
    log.append(
        topics.decisions,
        [
            (f"d{i}", decision_event(f"d{i}", seconds=now, candidates={"a": {"price": 1.0}}))
            for i in range(30)
        ],
    )
    log.close()
    runner = CliRunner()
    trained = runner.invoke(app, ["train", "--once", "--json", "--config", str(config_file)], env={})
    assert trained.exit_code == 0, trained.output
    pick = json.loads(trained.stdout)["use_cases"]["pick"]
    assert pick["decisions_waiting"] == 30
    assert pick["due"] is False
    assert "30 decisions wait for their outcomes' windows" in pick["explanation"]
    assert re.search(r"the next window closes in 3[01]m", pick["explanation"]), pick["explanation"]
    status = runner.invoke(app, ["status", "--config", str(config_file), "--lateness", "5"], env={})
    assert status.exit_code == 0, status.output
    assert "30 decisions wait" in status.stdout
    assert "(default policy)" in status.stdout
    assert "no decisions logged yet" in status.stdout  # the other use cases


def test_pin_rollback_and_unpin_a_champion_and_the_trainer_keeps_a_pinned_one(tmp_path: Path) -> None:
    from closedloop.registry import LocalModelRegistry

    config = make_config(tmp_path)
    config_file = tmp_path / "closedloop.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    registry = LocalModelRegistry(config.infrastructure.data_path / "registry")
    first = registry.publish("pick", "click", "model one", {"status": "champion"}, champion=True).version
    second = registry.publish(
        "pick",
        "click",
        "model two",
        {"status": "champion", "lineage": {"parent_version": first}},
        champion=True,
    ).version
    runner = CliRunner()
    rolled = runner.invoke(app, ["models", "rollback", "pick", "click", "-c", str(config_file)], env={})
    assert rolled.exit_code == 0, rolled.output
    assert registry.champion("pick", "click") == first
    assert registry.pinned("pick", "click") == first
    unknown = runner.invoke(
        app, ["models", "pin", "pick", "click", "v9-nope", "-c", str(config_file)], env={}
    )
    assert unknown.exit_code != 0
    assert "v9-nope" in str(unknown.exception)
    assert (
        runner.invoke(app, ["models", "pin", "pick", "click", second, "-c", str(config_file)]).exit_code == 0
    )
    assert (registry.champion("pick", "click"), registry.pinned("pick", "click")) == (second, second)
    assert runner.invoke(app, ["models", "unpin", "pick", "click", "-c", str(config_file)]).exit_code == 0
    assert registry.pinned("pick", "click") is None
    audit = json.loads(runner.invoke(app, ["audit", "--json", "-c", str(config_file)]).stdout)
    assert [e["action"] for e in audit] == ["champion.unpin", "champion.pin", "champion.rollback"]
    assert audit[2]["details"] == {"previous": second, "champion": first, "pinned": True}


def test_export_writes_decisions_feedback_and_examples_that_pandas_reads(tmp_path: Path) -> None:
    import pandas as pd

    config = make_config(tmp_path)
    config_file = tmp_path / "closedloop.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    topics = Topics(config.infrastructure.topic_prefix)
    log = FileEventLog(config.infrastructure.data_path / "events")
    decisions = [
        (f"d{i}", decision_event(f"d{i}", seconds=i, candidates={"a": {"price": float(i)}}))
        for i in range(50)
    ]
    log.append(topics.decisions, [*decisions, decisions[0]])  # one logged twice: exported once
    log.append(
        topics.feedback,
        [(f"d{i}", feedback_event(f"f{i}", f"d{i}", {"click": 1}, seconds=i + 1)) for i in range(20)],
    )
    log.close()
    runner = CliRunner()
    assert runner.invoke(app, ["train", "--once", "--json", "-c", str(config_file)], env={}).exit_code == 0
    written = {}
    for kind, form in (("decisions", "parquet"), ("feedback", "csv"), ("examples", "parquet")):
        target = tmp_path / f"{kind}.{form}"
        result = runner.invoke(
            app,
            [
                "export",
                kind,
                "--format",
                form,
                "--output",
                str(target),
                "--use-case",
                "pick",
                "-c",
                str(config_file),
            ],
        )
        assert result.exit_code == 0, result.output
        written[kind] = pd.read_parquet(target) if form == "parquet" else pd.read_csv(target)
    assert len(written["decisions"]) == 50
    assert written["decisions"]["chosen.price"].tolist() == [float(i) for i in range(50)]
    assert set(written["decisions"]["use_case"]) == {"pick"}
    assert len(written["feedback"]) == 20
    assert written["feedback"]["outcome.click"].sum() == 20
    examples = written["examples"]
    assert len(examples) == 50
    assert examples["label.click"].notna().sum() == 50  # every window closed: a label each
    assert examples["label.click"].sum() == 20
    assert sorted(examples["feature.price"]) == [float(i) for i in range(50)]


def test_a_second_trainer_joins_events_but_leaves_closing_windows_and_training_to_the_leader(
    tmp_path: Path,
) -> None:
    from closedloop.metadata import ProcessLock, open_database

    config = make_config(tmp_path)
    config_file = tmp_path / "closedloop.yaml"
    config_file.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    topics = Topics(config.infrastructure.topic_prefix)
    log = FileEventLog(config.infrastructure.data_path / "events")
    log.append(topics.decisions, [(f"d{i}", decision_event(f"d{i}", seconds=i)) for i in range(300)])
    log.close()
    engine = open_database(config.infrastructure.resolved_database_url)
    held = ProcessLock.try_take(engine, "trainer-leader")  # as a running `closedloop train` holds it
    assert held is not None
    runner = CliRunner()
    command = ["train", "--once", "--force", "--json", "--config", str(config_file)]
    try:
        follower = runner.invoke(app, command, env={})
    finally:
        held.release()
    leader = runner.invoke(app, command, env={})
    assert follower.exit_code == 0, follower.output
    assert leader.exit_code == 0, leader.output
    follower_cycle, leader_cycle = json.loads(follower.stdout), json.loads(leader.stdout)
    assert (follower_cycle["leader"], follower_cycle["consumed"]["decisions"]) == (False, 300)
    assert (follower_cycle["defaults_applied"], follower_cycle["runs"]) == (0, [])
    assert leader_cycle["leader"] is True
    assert leader_cycle["defaults_applied"] > 0  # every window long closed: the leader closed them
    assert leader_cycle["runs"]  # and trained (forced)
