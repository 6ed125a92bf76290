"""What the long-running commands log, and the one line a user gets instead of a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import CONFIG_YAML, free_port, wait_for_port

from closedloop.registry import LocalModelRegistry

pytestmark = pytest.mark.integration


def _config(tmp_path: Path, **infrastructure: str) -> Path:
    raw = yaml.safe_load(CONFIG_YAML)
    raw["infrastructure"] = {"data_dir": str(tmp_path / "data"), **infrastructure}
    path = tmp_path / "closedloop.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _closedloop(*args: str, blocked: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOSEDLOOP_")}
    prelude = ""
    if blocked is not None:  # as on an install without that package's extra
        prelude = f"import sys; sys.modules[{blocked!r}] = None; "
    code = (
        prelude
        + "from closedloop.cli import main; import sys; sys.argv = ['closedloop', *sys.argv[1:]]; main()"
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_serve_logs_its_start_and_every_model_swap_as_json(tmp_path: Path) -> None:
    path = _config(tmp_path)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOSEDLOOP_")}
    command = [sys.executable, "-m", "closedloop.cli", "serve", "-c", str(path), "--port", str(port)]
    log = tmp_path / "serve.log"
    with log.open("w") as sink:
        process = subprocess.Popen([*command, "--log-format", "json"], env=env, stdout=sink, stderr=sink)
        try:
            wait_for_port(port, timeout=60)
            registry = LocalModelRegistry(tmp_path / "data" / "registry")
            import lightgbm as lgb
            import numpy as np

            x = np.random.default_rng(0).random((200, 1))
            booster = lgb.train(
                {"objective": "binary", "verbose": -1},
                lgb.Dataset(x, x[:, 0] > 0.5, feature_name=["price"]),
                5,
            )
            registry.publish(
                "pick", "click", booster.model_to_string(), {"feature_names": ["price"]}, champion=True
            )
            deadline = time.monotonic() + 15
            while "serving pick" not in log.read_text() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
        finally:
            process.terminate()
            process.wait(timeout=30)
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    messages = [line["message"] for line in lines]
    assert any(m.startswith("decision service starting on http://127.0.0.1") for m in messages), messages
    assert any("registry and index: local" in m for m in messages)
    assert any(m.startswith("serving pick") for m in messages), messages
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)


@pytest.mark.parametrize(
    ("setting", "value", "command", "named"),
    [
        ("redis_url", "redis://127.0.0.1:{port}/0", "models", "CLOSEDLOOP_REDIS_URL"),
        ("database_url", "postgresql+psycopg://u@127.0.0.1:{port}/x", "status", "CLOSEDLOOP_DATABASE_URL"),
    ],
)
def test_an_unreachable_server_is_one_line_naming_the_setting(
    tmp_path: Path, setting: str, value: str, command: str, named: str
) -> None:
    path = _config(tmp_path, **{setting: value.format(port=free_port())})
    result = _closedloop(command, "-c", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "cannot be reached" in lines[0]
    assert named in lines[0]


def test_a_missing_extra_is_one_line_with_the_install_command(tmp_path: Path) -> None:
    path = _config(tmp_path)
    result = _closedloop("serve", "-c", str(path), blocked="uvicorn")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: this command needs uvicorn, from the service extra: pip install 'closedloop[service]'"
    ]


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


def test_the_trainer_serves_prometheus_metrics_of_its_joins_runs_and_lag(tmp_path: Path) -> None:
    from events import T0, decision_event, feedback_event

    from closedloop.contracts import Topics
    from closedloop.eventlog import FileEventLog

    path = _config(tmp_path)
    log = FileEventLog(tmp_path / "data" / "events")
    topics = Topics("closedloop")
    log.append(topics.decisions, [(f"d{i}", decision_event(f"d{i}", seconds=i)) for i in range(40)])
    log.append(
        topics.feedback,
        [(f"d{i}", feedback_event(f"f{i}", f"d{i}", {"click": 1}, seconds=i + 1)) for i in range(10)],
    )
    log.close()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOSEDLOOP_")}
    command = [sys.executable, "-m", "closedloop.cli", "train", "-c", str(path), "--interval", "0.5"]
    process = subprocess.Popen(
        [*command, "--metrics-port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port, timeout=60)
        deadline = time.monotonic() + 30
        text = ""
        while time.monotonic() < deadline:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
            if (_metric(text, "closedloop_trainer_cycles_total") or 0) >= 1:
                break
            time.sleep(0.2)
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert _metric(text, 'closedloop_trainer_events_total{kind="decisions"}') == 40
    assert _metric(text, 'closedloop_trainer_events_total{kind="feedback_joined"}') == 10
    lag = _metric(text, "closedloop_trainer_lag_seconds")
    assert lag is not None
    assert lag == pytest.approx(time.time() - (T0 + 39), abs=120)
    assert "closedloop_trainer_run_seconds" in text
