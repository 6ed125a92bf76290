"""The trainer on a Dask cluster (issue #16, point 8): ``trainer: {engine: dask, scheduler: ...}``
fits with LightGBM's Dask interface on a `distributed.LocalCluster` of 2 worker processes, the
model passes the same promotion gate, is published like any other, and predicts about as well as
the one the local engine fits on the same examples."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import make_config
from events import decision_event, feedback_event

from closedloop.contracts import ClosedLoopConfig, Topics, TrainerConfig
from closedloop.eventlog import FileEventLog
from closedloop.registry import LocalModelRegistry
from closedloop.trainer import ExampleStore, Trainer, TrainingRun
from closedloop.trainer._sources import FileEventSource

pytestmark = pytest.mark.integration

DECISIONS = 4000


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def _log_stream(directory: Path) -> FileEventLog:
    """Decisions between two offers whose click rate rises with the price shown (a signal the
    model must find), long past their windows; a click is reported, silence is the default 0."""
    rng = np.random.default_rng(7)
    topics = Topics("closedloop")
    log = FileEventLog(directory)
    decisions, feedback = [], []
    for i in range(DECISIONS):
        prices = {"a": float(rng.uniform(0, 2)), "b": float(rng.uniform(0, 2))}
        choice = "a" if rng.random() < 0.5 else "b"
        candidates = {name: {"price": price} for name, price in prices.items()}
        decisions.append(
            (f"d{i}", decision_event(f"d{i}", seconds=i * 10, candidates=candidates, choice=choice))
        )
        if rng.random() < 1 / (1 + np.exp(-3 * (prices[choice] - 1))):
            feedback.append((f"d{i}", feedback_event(f"f{i}", f"d{i}", {"click": 1.0}, seconds=i * 10 + 5)))
    log.append(topics.decisions, decisions)
    log.append(topics.feedback, feedback)
    return log


def _train(config: ClosedLoopConfig, log: FileEventLog, where: Path) -> TrainingRun:
    trainer = Trainer(
        config,
        store=ExampleStore.from_url(f"sqlite:///{where / 'trainer.db'}"),
        source=FileEventSource(log, Topics("closedloop")),
        registry=LocalModelRegistry(where / "registry"),
    )
    try:
        report = trainer.run_once(force=True, timeout=0)
    finally:
        trainer.close()
    (run,) = [run for run in report.runs if run.use_case == "pick"]
    return run


def test_a_model_fitted_on_a_dask_cluster_passes_the_same_gate_and_serves(
    tmp_path: Path, scheduler: str
) -> None:
    log = _log_stream(tmp_path / "events")
    config = make_config(tmp_path)
    on_dask = config.model_copy(update={"trainer": TrainerConfig(engine="dask", scheduler=scheduler)})
    (tmp_path / "dask").mkdir()
    (tmp_path / "local").mkdir()
    dask_run = _train(on_dask, log, tmp_path / "dask")
    local_run = _train(config, log, tmp_path / "local")

    assert dask_run.report["lineage"]["fitted_on"] == {"engine": "dask", "scheduler": scheduler, "workers": 2}
    assert local_run.report["lineage"]["fitted_on"] == {"engine": "local"}
    assert dask_run.promoted, dask_run.reason  # the same gate: better than the constant baseline
    assert dask_run.report["metrics"]["logloss"] < dask_run.report["baseline_metrics"]["logloss"]
    # trained on the same rows, about as good as the local fit
    assert dask_run.report["lineage"]["rows_train"] == local_run.report["lineage"]["rows_train"]
    assert dask_run.report["metrics"]["logloss"] <= local_run.report["metrics"]["logloss"] * 1.03
    assert dask_run.report["metrics"]["auc"] >= local_run.report["metrics"]["auc"] - 0.02
    # published like any model: the registry serves it as the champion
    registry = LocalModelRegistry(tmp_path / "dask" / "registry")
    assert registry.champion("pick", "click") == dask_run.version
