"""The main job on embedded defaults: the simulated product learns, and the report says so."""

from __future__ import annotations

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from closedloop.cli import app
from closedloop.simulator import Demo, demo_config, write_report


def test_the_learned_policy_beats_the_default_and_nears_the_oracle(tmp_path: Path) -> None:
    demo = Demo(demo_config(data_dir=str(tmp_path / "data")), seed=11)
    try:
        result = demo.run(rounds=12, decisions_per_round=1500)
    finally:
        demo.close()
    evaluation = result.evaluation
    assert evaluation["lift_over_default"]["low"] > 0  # the 95% interval excludes zero
    assert evaluation["learned"]["estimate"] >= 0.9 * evaluation["oracle"]["estimate"]
    assert result.live["difference"]["low"] > 0  # also on the live traffic it served

    html_path, json_path = write_report(result, tmp_path / "report")
    page = html_path.read_text()
    numbers = json.loads(json_path.read_text())
    for key in ("default", "learned", "oracle", "lift_over_default"):
        shown = re.search(rf'data-key="{key}">([0-9.-]+)', page)
        assert shown is not None
        assert float(shown.group(1)) == round(numbers["evaluation"][key]["estimate"], 3)
    assert page.count("data:image/png;base64,") == 2  # reward over time, model versions
    assert len(numbers["training_runs"]) == len(result.runs)


def test_closedloop_demo_writes_its_report(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["demo", "--rounds", "3", "--decisions", "300", "--output", str(tmp_path / "out")], env={}
    )
    assert result.exit_code == 0, result.output
    assert "oracle" in result.output
    assert (tmp_path / "out" / "report.html").exists()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert len(summary["rounds"]) == 3
