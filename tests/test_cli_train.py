"""`closedloop train --once` and `closedloop models` on embedded stores, as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import yaml
from conftest import make_config
from events import decision_event, feedback_event
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
    trained = runner.invoke(app, ["train", "--once", "--force", "--config", str(config_file)], env={})
    assert trained.exit_code == 0, trained.output
    listed = runner.invoke(app, ["models", "--config", str(config_file)], env={})
    assert listed.exit_code == 0, listed.output
    models = json.loads(listed.output)
    assert models["pick"]["click"]["champion"].startswith("v1-")
    [version] = models["pick"]["click"]["versions"]
    assert version["lineage"]["rows_train"] + version["lineage"]["rows_holdout"] == 2000
    assert version["metrics"]["auc"] > 0.8
    runs = {(run["use_case"], run["outcome"]): run for run in models["training_runs"]}
    assert runs[("pick", "click")]["promoted"] is True
    assert runs[("feed", "click")]["version"] is None  # no data for it: recorded, not trained
