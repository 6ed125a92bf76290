"""The first hour of a new user: `closedloop init`, the JSON Schema their editor uses, and the
quickstart's promise: a served model within five minutes of the first decisions."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from closedloop.cli import app
from closedloop.contracts import config_json_schema, load_config, shipped_json_schema
from closedloop.sdk import EmbeddedClient
from closedloop.trainer import open_trainer

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads(shipped_json_schema())


def test_the_shipped_schema_is_the_one_the_models_generate() -> None:
    assert config_json_schema() == SCHEMA, "run: closedloop schema > contracts/closedloop.schema.json"
    assert CliRunner().invoke(app, ["schema"]).stdout == shipped_json_schema()


@pytest.mark.parametrize("path", [ROOT / "examples" / "closedloop.yaml", ROOT / "cli" / "starter.yaml"])
def test_the_schema_accepts_the_example_and_the_starter(path: Path) -> None:
    jsonschema.validate(yaml.safe_load(path.read_text()), SCHEMA)


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda raw: raw["use_cases"]["home_feed"].update(decision="pick"), "decision"),
        (lambda raw: raw["use_cases"]["home_feed"]["outcomes"]["click"].update(window="soon"), "window"),
        (lambda raw: raw["use_cases"]["home_feed"].update(colour="red"), "colour"),
        (lambda raw: raw["use_cases"]["home_feed"].pop("policy"), "policy"),
    ],
)
def test_the_schema_rejects_a_broken_file(change: object, where: str) -> None:
    raw = yaml.safe_load((ROOT / "examples" / "closedloop.yaml").read_text())
    change(raw)  # type: ignore[operator]
    with pytest.raises(jsonschema.ValidationError) as refused:
        jsonschema.validate(raw, SCHEMA)
    error = refused.value
    assert where in error.message + " at " + ".".join(str(part) for part in error.absolute_path)


def test_init_writes_a_commented_starter_that_validates_and_never_overwrites(tmp_path: Path) -> None:
    target = tmp_path / "project" / "closedloop.yaml"
    runner = CliRunner()
    made = runner.invoke(app, ["init", str(target)])
    assert made.exit_code == 0, made.output
    text = target.read_text()
    assert text.startswith("# yaml-language-server: $schema=./closedloop.schema.json")
    assert text.count("#") > 10  # commented for a newcomer
    assert json.loads((target.parent / "closedloop.schema.json").read_text()) == SCHEMA
    assert runner.invoke(app, ["validate", str(target)]).exit_code == 0
    again = runner.invoke(app, ["init", str(target)])
    assert again.exit_code != 0
    assert "--force" in str(again.exception)


def test_the_quickstart_serves_a_model_within_five_minutes_of_the_first_decisions(tmp_path: Path) -> None:
    """The starter's windows (2 minutes) and trigger, on simulated time: traffic for four
    minutes, then one `train` cycle at minute five (lateness as `train --lateness 30`)."""
    target = tmp_path / "closedloop.yaml"
    assert CliRunner().invoke(app, ["init", str(target)]).exit_code == 0
    raw = yaml.safe_load(target.read_text())
    raw["infrastructure"] = {"data_dir": str(tmp_path / "data")}
    target.write_text(yaml.safe_dump(raw))
    config = load_config(target, environ={})
    start = datetime(2026, 12, 7, 9, 0, tzinfo=UTC)
    now = [start]
    rng = np.random.default_rng(0)
    topics = ["sports", "tech", "politics", "culture"]
    with EmbeddedClient(config, seed=1, clock=lambda: now[0]) as client:
        for i in range(1200):  # 5 a second for four minutes
            now[0] = start + timedelta(seconds=i * 0.2)
            candidates = {f"a{k}": {"topic": topics[k % 4], "popularity": float(k)} for k in range(6)}
            decision = client.decide(
                "home_feed", f"user{i % 300}", context={"country": "de"}, candidates=candidates
            )
            liked = candidates[decision.choice]["topic"] == "tech"
            if rng.random() < (0.6 if liked else 0.1):
                client.log_feedback(
                    decision.decision_id, {"click": 1}, timestamp=now[0] + timedelta(seconds=20)
                )
        assert decision.policy == "default"
        five_minutes = (start + timedelta(minutes=5)).timestamp()
        trainer = open_trainer(config, clock=lambda: five_minutes, lateness=30)
        report = trainer.run_once(timeout=0)
        trainer.close()
        assert [run.promoted for run in report.runs] == [True], [r.reason for r in report.runs]
        client.refresh_models()
        served = client.decide("home_feed", "user1", context={"country": "de"}, candidates=candidates)
    assert served.policy == "model"
