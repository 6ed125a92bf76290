"""`closedloop tune` as a user meets it: clear errors before anything runs, status and report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from closedloop.cli import app
from closedloop.contracts import TuningError

EXAMPLE = Path(__file__).parent.parent / "examples" / "closedloop.yaml"


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["infrastructure"] = {"data_dir": str(tmp_path / "data")}
    path = tmp_path / "closedloop.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["start", "nope"], "Unknown use case 'nope'"),
        (["start", "push_notification", "--method", "sideways"], "Unknown tuning method 'sideways'"),
        (["start", "home_feed"], "has no tuning: block"),
        (["report", "push_notification"], "No tuning run 'push_notification.online' yet"),
        (["stop", "push_notification"], "No online tuning run of 'push_notification' to stop"),
        (["start", "push_notification", "--seed-from-offline"], "no offline tuning run"),
    ],
)
def test_mistakes_fail_with_a_clear_error_before_anything_runs(
    config_file: Path, args: list[str], message: str
) -> None:
    result = CliRunner().invoke(app, ["tune", *args, "-c", str(config_file)])
    assert isinstance(result.exception, TuningError), result.output
    assert message in str(result.exception)


def test_status_lists_no_runs_on_a_fresh_database(config_file: Path) -> None:
    result = CliRunner().invoke(app, ["tune", "status", "-c", str(config_file), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {}
    table = CliRunner().invoke(app, ["tune", "status", "pick", "-c", str(config_file)])
    assert table.exit_code == 0, table.output
    assert "recommendation" in table.output


def test_the_help_lists_the_four_jobs() -> None:
    result = CliRunner().invoke(app, ["tune", "--help"])
    assert result.exit_code == 0
    for job in ("start", "status", "stop", "report"):
        assert job in result.output
