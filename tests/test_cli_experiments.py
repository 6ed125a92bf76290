"""`closedloop experiments start|list|stop` and `closedloop report`, as a user runs them (embedded)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from test_evaluation_experiment import OFFER_YAML, offer_config, run_experiment
from typer.testing import CliRunner

from closedloop.cli import app
from closedloop.registry import LocalModelRegistry


def test_start_report_and_stop_an_experiment_from_the_command_line(tmp_path: Path) -> None:
    config = offer_config(tmp_path)
    config_file = tmp_path / "closedloop.yaml"
    raw = yaml.safe_load(OFFER_YAML)
    raw["infrastructure"] = {"data_dir": str(tmp_path / "data")}
    config_file.write_text(yaml.safe_dump(raw))
    runner = CliRunner()

    started = runner.invoke(app, ["experiments", "start", "by_quality", "-c", str(config_file)])
    assert started.exit_code == 0, started.output
    assert "phase 1 running on offer (control 0.5, model 0.5; holdout 0)" in started.output
    phases = LocalModelRegistry(tmp_path / "data" / "registry").phases("by_quality")
    assert [p.phase for p in phases] == [1]

    run_experiment(config, units=300, decisions_per_unit=2)  # same allocation: still phase 1
    output = tmp_path / "out"
    reported = runner.invoke(app, ["report", "by_quality", "-c", str(config_file), "--output", str(output)])
    assert reported.exit_code == 0, reported.output
    data = json.loads((output / "report.json").read_text())
    assert sum(arm["decisions"] for arm in data["arms"]) == 600
    assert (output / "report.html").stat().st_size > 10_000

    listed = runner.invoke(app, ["experiments", "list", "by_quality", "-c", str(config_file), "--json"])
    assert json.loads(listed.output)["by_quality"]["phases"][0]["stopped_at"] is None
    table = runner.invoke(app, ["experiments", "list", "-c", str(config_file)]).output
    assert "by_quality" in table
    assert "running" in table
    assert "control 0.5, model 0.5" in table

    as_json = runner.invoke(
        app, ["report", "by_quality", "-c", str(config_file), "--output", str(output), "--json"]
    )
    assert json.loads(as_json.output)["arms"] == data["arms"]
    assert (output / "report.csv").read_text().startswith("metric,arm,control,units,mean")
    stopped = runner.invoke(app, ["experiments", "stop", "by_quality", "-c", str(config_file), "--json"])
    assert stopped.exit_code == 0, stopped.output
    assert json.loads(stopped.output)["stopped_at"] is not None
    again = runner.invoke(app, ["experiments", "stop", "by_quality", "-c", str(config_file)])
    assert again.exit_code != 0
    assert "is not running" in str(again.exception)
