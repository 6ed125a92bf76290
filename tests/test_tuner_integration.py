"""A short online tuning run against real Redis, a Kafka-protocol broker (Tansu) and PostgreSQL:
the tuner runs as `closedloop tune start` in its own process while product traffic flows; it is
killed with SIGKILL after it deployed a round and restarted, and must finish without losing or
repeating a trial."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import orjson
import pytest
import sqlalchemy as sa
import yaml
from conftest import POSTGRES_URL, REDIS_URL, Broker, Server

from closedloop.console import create_console
from closedloop.contracts import ClosedLoopConfig, parse_config, tuning_experiment_name
from closedloop.registry import open_registry
from closedloop.sdk import EmbeddedClient
from closedloop.simulator import TuningWorld, tuning_config
from closedloop.tuner import AxSession, TuningSpace, TuningStore, tuning_report, write_tuning_report

pytestmark = pytest.mark.integration

ROUNDS, ARMS, UNITS = 3, 2, 60


@pytest.fixture
def postgres_schema() -> Iterator[str]:
    schema = f"cltest_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(POSTGRES_URL)
    with engine.begin() as connection:
        connection.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    yield schema
    with engine.begin() as connection:
        connection.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


def short_config(
    tmp_path: Path, broker: Broker, redis_prefix: str, schema: str
) -> tuple[Path, ClosedLoopConfig]:
    """The tuning world's use case with windows of seconds and small rounds, on the real services."""
    raw = yaml.safe_load(Path(tuning_config.__code__.co_filename).with_name("tuning.yaml").read_text())
    offer = raw["use_cases"]["offer"]
    offer["outcomes"] = {
        "click": {"type": "binary", "window": "2s"},
        "purchase": {"type": "binary", "window": "2s"},
    }
    offer["tuning"].update(arms_per_round=ARMS, min_units_per_arm=UNITS, rounds=ROUNDS, seed=3)
    raw["infrastructure"] = {
        "redis_url": REDIS_URL,
        "kafka_bootstrap": broker.bootstrap,
        "database_url": f"{POSTGRES_URL}?options=-csearch_path%3D{schema}",
        "data_dir": str(tmp_path / "data"),
        "key_prefix": redis_prefix,
        "topic_prefix": f"t{uuid.uuid4().hex[:8]}",
    }
    path = tmp_path / "closedloop.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))  # key order is feature order
    return path, parse_config(path.read_text(), environ={})


class Traffic:
    """Product traffic on its own thread: new users decide through the embedded client and respond."""

    def __init__(self, config: ClosedLoopConfig, world: TuningWorld) -> None:
        self.client = EmbeddedClient(config, seed=5, refresh_interval=0.2)
        self.world = world
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.batches = 0

    def _run(self) -> None:
        from datetime import UTC, datetime

        while not self._stop.is_set():
            self.world.serve(
                self.client, lambda: datetime.now(UTC), lambda _: None, 40, prefix=f"b{self.batches}"
            )
            self.batches += 1
            time.sleep(0.05)

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        self.client.close()


def tune(path: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOSEDLOOP_")}
    return subprocess.Popen(
        [sys.executable, "-m", "closedloop.cli", "tune", "start", "offer", "-c", str(path), "--poll", "0.5"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_killed_tuner_resumes_without_losing_or_repeating_a_trial(
    tmp_path: Path,
    broker: Broker,
    redis_prefix: str,
    postgres_schema: str,
    serve: Callable[[object], Server],
) -> None:
    path, config = short_config(tmp_path, broker, redis_prefix, postgres_schema)
    world = TuningWorld(config, seed=2)
    registry = open_registry(config.infrastructure)
    world.publish_models(registry)
    store = TuningStore.from_url(config.infrastructure.resolved_database_url)
    run = "offer.online"
    with Traffic(config, world):
        first = tune(path)
        try:
            wait_for(lambda: len(store.rounds(run)) >= 2 or first.poll() is not None, 240, "round 2")
        finally:
            first.kill()  # SIGKILL: no cleanup of any kind
            output, _ = first.communicate(timeout=10)
        assert len(store.rounds(run)) >= 2, output.decode()[-3000:]
        before = {t.trial_index: t.parameters for t in store.trials(run) if t.round == 2}
        assert len(before) == ARMS
        # Its arms keep serving while no tuner runs: the experiment lives in the registry.
        assert registry.phases(tuning_experiment_name("offer"))[-1].running

        second = tune(path)
        output, _ = second.communicate(timeout=300)
        assert second.returncode == 0, output.decode()[-3000:]

    record = store.run(run)
    assert record is not None
    assert record.status == "done"
    assert record.rounds_done == ROUNDS
    trials = store.trials(run)
    assert [t.trial_index for t in trials] == list(range(ROUNDS * ARMS))  # none lost, none repeated
    assert {t.trial_index: t.parameters for t in trials if t.round == 2} == before
    for t in trials:
        assert t.status == "completed"
        assert t.units is not None
        assert t.units >= UNITS
        assert t.measurement is not None
        assert {"purchase", "click", "click_vs_status_quo"} <= set(t.measurement)
    rounds = store.rounds(run)
    assert [r.round for r in rounds] == list(range(1, ROUNDS + 1))
    assert all(r.baseline_units is not None and r.baseline_units >= UNITS for r in rounds)
    # Ax's own state agrees with the rows: it holds exactly these trials, all completed.
    space = TuningSpace.of("offer", config.use_cases["offer"], online=True)
    snapshot = orjson.loads(record.ax_state)
    assert len(snapshot["experiment"]["trials"]) == ROUNDS * ARMS
    session = AxSession.restore(record.ax_state, space, "bayesian", 3)
    assert record.recommendation is not None
    assert record.recommendation["configurations"] or record.recommendation["note"]
    picks = session.recommendations({t.trial_index: (t.parameters, t.measurement or {}) for t in trials})
    assert len(picks) <= 1
    assert all(not space.violations(pick.predicted) for pick in picks)
    # Each round ran as its own phase, and the experiment stopped at the end (promote is off).
    phases = registry.phases(tuning_experiment_name("offer"))
    assert sorted({r.phase for r in rounds}) == sorted(r.phase for r in rounds)
    assert not phases[-1].running
    # The report shows every trial with its measurement, from the same rows.
    report = tuning_report(store, run, space)
    html_path, json_path = write_tuning_report(report, tmp_path / "report")
    page = html_path.read_text()
    for i, t in enumerate(report.trials):
        assert f"data-key='trials.{i}.metrics.purchase.mean'>{t.metrics['purchase'].mean:.4g}<" in page
    assert "<img alt='plot'" in page
    assert orjson.loads(json_path.read_text())["rounds_done"] == ROUNDS
    by_index = {t.trial_index: t for t in report.trials}
    baselines = {r.round: r for r in report.rounds}
    for row in report.versus_status_quo:  # each recommendation against its round's status quo
        trial = by_index[row.trial_index]
        assert row.difference == pytest.approx(trial.objective - baselines[trial.round].baseline_objective)
        assert row.distinguishable == (not row.low <= 0 <= row.high)
        assert ("Not distinguishable from the status quo" in page) == (not row.distinguishable)
    # The console lists the run and serves the same report.
    console = serve(create_console(config))
    listing = httpx.get(f"{console.url}/tuning", timeout=30).text
    assert f'href="/tuning/{run}"' in listing
    served = httpx.get(f"{console.url}/tuning/{run}", timeout=30).text
    for i, t in enumerate(report.trials):
        assert f"data-key='trials.{i}.metrics.purchase.mean'>{t.metrics['purchase'].mean:.4g}<" in served
    assert httpx.get(f"{console.url}/tuning/nope", timeout=30).status_code == 422
    store.close()
    registry.close()


def test_a_recommendation_indistinguishable_from_the_status_quo_says_so() -> None:
    from closedloop.tuner import TuningReport, render_tuning_html

    base = {
        "run": "r", "use_case": "offer", "mode": "online", "method": "bayesian", "status": "done",
        "rounds_done": 1, "rounds_planned": 1, "objective": "purchase", "constraints": [], "trials": [],
        "rounds": [], "pareto_metrics": [],
        "recommendation": {"configurations": [{"trial_index": 3, "parameters": {"epsilon": 0.1}}]},
    }  # fmt: skip
    unclear = {"trial_index": 3, "difference": 0.01, "low": -0.02, "high": 0.04, "distinguishable": False}
    page = render_tuning_html(TuningReport.model_validate({**base, "versus_status_quo": [unclear]}))
    assert "Not distinguishable from the status quo" in page
    clear = {**unclear, "low": 0.005, "distinguishable": True}
    page = render_tuning_html(TuningReport.model_validate({**base, "versus_status_quo": [clear]}))
    assert "Not distinguishable" not in page
    assert "Against the status quo of its round: +0.01" in page
