"""Experiments at serving time: stable hashed assignment, shares, holdout, phases, on both registries."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import CONFIG_YAML, REDIS_URL
from scipy import stats

from closedloop.contracts import (
    ClosedLoopConfig,
    ConfigError,
    DecideRequest,
    DecisionEvent,
    ExperimentError,
    Topics,
    decode_decision,
    parse_config,
)
from closedloop.decision_service import DecisionEngine, open_engine
from closedloop.eventlog import FileEventLog, Position
from closedloop.registry import (
    LocalModelRegistry,
    ModelRegistry,
    RedisModelRegistry,
    open_registry,
    start_experiment,
    stop_experiment,
)

EXPERIMENT = {
    "arms": {
        "control": {"share": 0.5, "control": True, "policy": "default"},
        "greedier": {"share": 0.3, "temperature": 0.05},
        "bolder": {"share": 0.2, "temperature": 1.0},
    },
    "holdout": 0.1,
}


def config_with(tmp_path: Path, experiment: dict[str, Any], **infra: str) -> ClosedLoopConfig:
    raw = yaml.safe_load(CONFIG_YAML)
    raw["use_cases"]["pick"]["experiments"] = {"temps": experiment}
    raw["infrastructure"] = {"data_dir": str(tmp_path / "data"), **infra}
    return parse_config(yaml.safe_dump(raw), environ={})


def pick(unit: str) -> DecideRequest:
    return DecideRequest.model_validate(
        {"use_case": "pick", "unit_id": unit, "candidates": [{"id": "a"}, {"id": "b"}]}
    )


def start(engine: DecisionEngine, config: ClosedLoopConfig, *, now: float = 1.0) -> int:
    experiment = config.use_cases["pick"].experiments["temps"]
    phase = start_experiment(open_registry(config.infrastructure), "pick", "temps", experiment, now=now)
    engine.refresh_models()
    return phase.phase


def logged_decisions(config: ClosedLoopConfig) -> list[DecisionEvent]:
    log = FileEventLog(config.infrastructure.data_path / "events", read_only=True)
    topic = Topics(config.infrastructure.topic_prefix).decisions
    records, _ = log.read(topic, Position(0, 0), max_records=1_000_000)
    log.close()
    return [decode_decision(r) for r in records]


def test_arm_is_stable_recorded_and_shared_as_declared(tmp_path: Path) -> None:
    config = config_with(tmp_path, EXPERIMENT)
    engine = open_engine(config, seed=1)
    assert engine.decide(pick("before")).arm is None
    assert start(engine, config) == 1

    units = [f"user-{i}" for i in range(12_000)]
    arms = {unit: engine.decide(pick(unit)).arm for unit in units}
    assert all(engine.decide(pick(unit)).arm == arms[unit] for unit in units[:500])

    counts = Counter(arms.values())
    expected = {"holdout": 0.1, "control": 0.45, "greedier": 0.27, "bolder": 0.18}
    observed = [counts[arm] for arm in expected]
    chi2 = stats.chisquare(observed, [share * len(units) for share in expected.values()])
    assert chi2.pvalue > 0.001, (counts, chi2)

    events = logged_decisions(config)[1:]
    assert {e.experiment for e in events} == {"temps"}
    assert {e.experiment_phase for e in events} == {1}
    by_arm = {e.arm: e for e in events}
    assert by_arm["holdout"].policy == "default"
    assert by_arm["control"].policy == "default"
    assert by_arm["bolder"].exploration == {"strategy": "softmax", "temperature": 1.0, "value_unit": 1.0}
    assert by_arm["greedier"].exploration == {"strategy": "softmax", "temperature": 0.05, "value_unit": 1.0}


def test_a_new_salt_reshuffles_units(tmp_path: Path) -> None:
    first = open_engine(config_with(tmp_path / "a", EXPERIMENT), seed=1)
    second = open_engine(config_with(tmp_path / "b", {**EXPERIMENT, "salt": "other"}), seed=1)
    start(first, config_with(tmp_path / "a", EXPERIMENT))
    start(second, config_with(tmp_path / "b", {**EXPERIMENT, "salt": "other"}))
    units = [f"u{i}" for i in range(2000)]
    same = sum(first.decide(pick(u)).arm == second.decide(pick(u)).arm for u in units)
    # Independent assignment agrees with probability sum(share^2) = 0.01 + 0.2025 + 0.0729 + 0.0324.
    assert 0.25 < same / len(units) < 0.38


def test_changing_the_allocation_starts_a_new_phase_and_stop_ends_it(tmp_path: Path) -> None:
    config = config_with(tmp_path, EXPERIMENT)
    engine = open_engine(config, seed=1)
    start(engine, config, now=10.0)
    assert start(engine, config, now=11.0) == 1  # same allocation: nothing changes

    changed = config_with(tmp_path, {**EXPERIMENT, "holdout": 0.0})
    assert start(engine, changed, now=20.0) == 2
    registry = open_registry(config.infrastructure)
    phases = registry.phases("temps")
    assert [(p.phase, p.started_at, p.stopped_at, p.reason) for p in phases] == [
        (1, 10.0, 20.0, "start"),
        (2, 20.0, None, "change"),
    ]
    assert {engine.decide(pick(f"u{i}")).arm for i in range(300)} == {"control", "greedier", "bolder"}
    assert logged_decisions(config)[-1].experiment_phase == 2

    stop_experiment(registry, "temps", now=30.0)
    engine.refresh_models()
    assert engine.decide(pick("u1")).arm is None
    with pytest.raises(ExperimentError, match="not running"):
        stop_experiment(registry, "temps")


def concurrent_starts(registry: ModelRegistry, config: ClosedLoopConfig) -> list[int]:
    experiment = config.use_cases["pick"].experiments["temps"]
    variants = [experiment.model_copy(update={"holdout": h / 100}) for h in range(8)]
    barrier = threading.Barrier(len(variants))

    def run(variant: Any) -> None:
        barrier.wait()
        start_experiment(registry, "pick", "temps", variant)

    threads = [threading.Thread(target=run, args=(v,)) for v in variants]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [p.phase for p in registry.phases("temps")]


@pytest.mark.integration
def test_phases_on_redis_never_lose_a_concurrent_start(tmp_path: Path, redis_prefix: str) -> None:
    config = config_with(tmp_path, EXPERIMENT)
    registry = RedisModelRegistry.from_url(REDIS_URL, prefix=redis_prefix)
    phases = concurrent_starts(registry, config)
    assert phases == list(range(1, len(phases) + 1))
    history = registry.phases("temps")
    assert [p.running for p in history] == [False] * (len(history) - 1) + [True]
    assert registry.experiment_names() == ["temps"]


def test_phases_in_a_local_registry_never_lose_a_concurrent_start(tmp_path: Path) -> None:
    config = config_with(tmp_path, EXPERIMENT)
    phases = concurrent_starts(LocalModelRegistry(tmp_path / "registry"), config)
    assert phases == list(range(1, len(phases) + 1))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"arms": {"a": {"share": 0.5, "control": True}, "b": {"share": 0.4}}},
            "add up to 1, they add up to 0.9",
        ),
        ({"arms": {"a": {"share": 0.5}, "b": {"share": 0.5}}}, "exactly one arm must have 'control: true'"),
        (
            {"arms": {"a": {"share": 0.5, "control": True}, "b": {"share": 0.5, "epsilon": 0.3}}},
            "explores by softmax",
        ),
        (
            {"arms": {"a": {"share": 0.5, "control": True}, "b": {"share": 0.5, "value": "click + x"}}},
            "['x']",
        ),
        ({"guardrails": [{"metric": "revenue"}]}, "guardrail on 'revenue', which is not a metric"),
        ({"breakdowns": ["country"]}, "breaks down by 'country', which is not a context feature"),
        ({"arms": {"a": {"share": 0.5, "control": True}, "holdout": {"share": 0.5}}}, "reserved"),
    ],
)
def test_bad_experiments_fail_at_load_naming_the_field(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as error:
        config_with(tmp_path, {**EXPERIMENT, **change})
    assert message in str(error.value)
    assert "use_cases.pick" in str(error.value)
