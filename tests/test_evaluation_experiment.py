"""An experiment run through the real engine on a world with known effects, then analysed from the
logs: lift, segments that gain and lose, SRM, off-policy values, and clear notes on bad input."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import orjson
import pytest
import yaml

from closedloop.contracts import (
    ClosedLoopConfig,
    DecideRequest,
    ExperimentError,
    FeedbackIn,
    Topics,
    UnknownExperimentError,
    parse_config,
)
from closedloop.decision_service import DecisionEngine, open_engine
from closedloop.evaluation import ExperimentReport, analyze_experiment
from closedloop.evaluation import _log_batches as log_batches
from closedloop.eventlog import FileEventLog, Position, SegmentLog
from closedloop.eventlog import _scan as scan
from closedloop.registry import LocalModelRegistry, open_registry, start_experiment

T0 = datetime(2026, 11, 1, tzinfo=UTC)
OFFER_YAML = """
use_cases:
  offer:
    decision: choose
    context:
      segment: {type: categorical, values: [a, b]}
    candidate:
      quality: {type: numeric}
    outcomes:
      buy: {type: binary, window: 1h}
      view: {type: binary, window: 1h}
    policy:
      value: buy
      exploration: {strategy: epsilon_greedy, epsilon: 0.2}
    experiments:
      by_quality:
        arms:
          control: {share: 0.5, control: true, policy: default}
          model: {share: 0.5}
        guardrails: [{metric: buy, margin: 0.5}]
"""


def buy_probability(segment: str, quality: float) -> float:
    """Quality sells in segment a and puts segment b off; at quality 0.5 both buy 20% of the time."""
    return 0.1 + 0.2 * quality if segment == "a" else 0.3 - 0.2 * quality


def offer_config(tmp_path: Path, **experiment: Any) -> ClosedLoopConfig:
    raw = yaml.safe_load(OFFER_YAML)
    raw["use_cases"]["offer"]["experiments"]["by_quality"].update(experiment)
    raw["infrastructure"] = {"data_dir": str(tmp_path / "data")}
    return parse_config(yaml.safe_dump(raw), environ={})


def quality_model() -> str:
    """A model of buying that ranks candidates by quality, whatever the segment."""
    rng = np.random.default_rng(0)
    x = np.column_stack([rng.integers(0, 2, 4000), rng.random(4000)])
    y = (rng.random(4000) < 0.1 + 0.3 * x[:, 1]).astype(float)
    data = lgb.Dataset(x, y, feature_name=["segment", "quality"], categorical_feature=[])
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_leaves": 7}, data, num_boost_round=30)
    return str(booster.model_to_string())


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def offer_decision(
    engine: DecisionEngine, clock: Clock, unit: int, segment: str, rng: np.random.Generator
) -> tuple[str, float]:
    """A second later, one decision for the unit among three offers of random quality: its id and
    the chosen offer's quality."""
    clock.now += timedelta(seconds=1)
    qualities = rng.random(3)
    decision = engine.decide(
        DecideRequest(
            use_case="offer",
            unit_id=f"user-{unit}",
            context={"segment": segment},
            candidates=[{"id": f"i{k}", "features": {"quality": float(q)}} for k, q in enumerate(qualities)],  # type: ignore[misc]
        )
    )
    return decision.decision_id, float(qualities[int(decision.choice[1:])])  # type: ignore[index]


def run_experiment(config: ClosedLoopConfig, units: int, decisions_per_unit: int, seed: int = 0) -> None:
    registry = open_registry(config.infrastructure)
    registry.publish("offer", "buy", quality_model(), {}, champion=True)
    experiment = config.use_cases["offer"].experiments["by_quality"]
    start_experiment(registry, "offer", "by_quality", experiment, now=T0.timestamp())
    clock = Clock()
    engine = open_engine(config, seed=seed, clock=clock)
    rng = np.random.default_rng(seed)
    for unit in range(units):
        segment = "a" if rng.random() < 0.7 else "b"
        for _ in range(decisions_per_unit):
            decision_id, quality = offer_decision(engine, clock, unit, segment, rng)
            if rng.random() < buy_probability(segment, quality):
                engine.log_feedback(
                    [FeedbackIn(decision_id=decision_id, outcomes={"buy": 1}, timestamp=clock.now)]
                )
    assert engine.wait_until_delivered(60)
    engine.close()
    registry.close()


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory) -> tuple[ClosedLoopConfig, ExperimentReport]:
    config = offer_config(tmp_path_factory.mktemp("offer"))
    run_experiment(config, units=6000, decisions_per_unit=3)
    report = analyze_experiment(config, "by_quality", as_of=(T0 + timedelta(days=2)).timestamp())
    return config, report


def comparison(report: ExperimentReport, metric: str, arm: str = "model") -> Any:
    result = next(m for m in report.metrics if m.name == metric)
    return next(c for c in result.comparisons if c.arm == arm)


def test_the_lift_interval_covers_the_known_effect(
    analysed: tuple[ClosedLoopConfig, ExperimentReport],
) -> None:
    _, report = analysed
    assert not report.srm.mismatch
    assert {a.name: a.units for a in report.arms}.keys() == {"control", "model"}
    assert sum(a.units for a in report.arms) == 6000
    # E[quality] of the choice: 0.5 by the default (first candidate), 0.7 by the model (epsilon 0.2).
    truth = 0.7 * 0.2 * 0.2 - 0.3 * 0.2 * 0.2
    buy = comparison(report, "buy")
    assert buy.lift.low < truth < buy.lift.high
    assert buy.lift.low > 0
    assert buy.significant
    control = next(a for a in next(m for m in report.metrics if m.name == "buy").arms if a.arm == "control")
    assert control.mean == pytest.approx(0.2, abs=0.012)


def test_segments_that_gain_and_lose_are_named(analysed: tuple[ClosedLoopConfig, ExperimentReport]) -> None:
    _, report = analysed
    effects = report.heterogeneity[0]
    assert effects.arm == "model"
    assert effects.gains == ["segment=a"]
    assert effects.losses == ["segment=b"]
    by_segment = {s.segment: s.lift for s in effects.breakdowns}
    assert by_segment["a"].low < 0.04 < by_segment["a"].high
    assert by_segment["b"].low < -0.04 < by_segment["b"].high
    groups = effects.cate_groups
    assert len(groups) == 5
    assert groups[0].effect.estimate < 0 < groups[-1].effect.estimate


def test_off_policy_values_of_the_arms_match_their_true_values(
    analysed: tuple[ClosedLoopConfig, ExperimentReport],
) -> None:
    _, report = analysed
    assert report.ope is not None
    values = {p.policy: p for p in report.ope.policies}
    # The default policy buys 20% of the time; the model arm 0.7 * 0.24 + 0.3 * 0.16 = 21.6%.
    for name, truth in (("control", 0.2), ("model", 0.216), ("champions", 0.216)):
        dr = values[name].doubly_robust
        # Three standard errors: coverage itself is measured over many runs in test_offpolicy.py.
        assert abs(dr.estimate - truth) < 1.5 * (dr.high - dr.low) / 2, (name, dr)
        assert values[name].effective_sample_size > 1000


def test_guardrail_is_judged(analysed: tuple[ClosedLoopConfig, ExperimentReport]) -> None:
    _, report = analysed
    assert [(g.metric, g.arm, g.passed) for g in report.guardrails] == [("buy", "model", True)]


def test_a_metric_never_reported_is_called_out(analysed: tuple[ClosedLoopConfig, ExperimentReport]) -> None:
    _, report = analysed
    assert any(
        "Metric 'view'" in note and "none of its outcomes was ever reported" in note for note in report.notes
    )


def test_an_experiment_never_started_or_undeclared_gets_a_clear_error(tmp_path: Path) -> None:
    config = offer_config(tmp_path)
    with pytest.raises(ExperimentError, match="has not been started"):
        analyze_experiment(config, "by_quality")
    with pytest.raises(UnknownExperimentError, match=r"declared: \['by_quality'\]"):
        analyze_experiment(config, "nope")


def test_a_started_experiment_without_data_reports_so(tmp_path: Path) -> None:
    config = offer_config(
        tmp_path,
        arms={
            "control": {"share": 1.0, "control": True, "policy": "default"},
            "dormant": {"share": 0.0},
        },
    )
    registry = LocalModelRegistry(config.infrastructure.data_path / "registry")
    start_experiment(registry, "offer", "by_quality", config.use_cases["offer"].experiments["by_quality"])
    report = analyze_experiment(config, "by_quality")
    assert any("none were logged" in note for note in report.notes)
    assert any("Arm 'dormant' has no units yet (its share is 0)" in note for note in report.notes)
    assert report.ope is None
    assert all(c.lift.estimate is None for m in report.metrics for c in m.comparisons)


def test_zero_or_missing_propensities_are_left_out_with_a_note(tmp_path: Path) -> None:
    config = offer_config(tmp_path)
    run_experiment(config, units=200, decisions_per_unit=1)
    events = config.infrastructure.data_path / "events" / "closedloop.decisions"
    from closedloop.eventlog import FileEventLog, Position

    log = FileEventLog(config.infrastructure.data_path / "events")
    records, _ = log.read("closedloop.decisions", Position(0, 0), max_records=10)
    broken = []  # records no writer through the codec could make: edited by hand on purpose
    for i, record in enumerate(records[:3]):
        event = orjson.loads(record)
        event["event_id"] = f"broken{i}"
        event["propensity"] = [0.0, None, 1.5][i]
        broken.append((event["event_id"], orjson.dumps(event)))
    log.append("closedloop.decisions", broken)
    log.close()
    assert events.exists()
    report = analyze_experiment(config, "by_quality", as_of=(T0 + timedelta(days=2)).timestamp())
    assert any(
        "3 sampled decisions have a missing, zero or out-of-range propensity" in n for n in report.notes
    )


def test_a_long_log_read_in_worker_processes_gives_the_same_report(
    analysed: tuple[ClosedLoopConfig, ExperimentReport], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past `PARALLEL_AFTER` records the decisions' read goes to worker processes, in order: here
    after the first 2,000 records, with a decision logged twice across the switch and a record no
    version wrote; the log's sealed segments are read by the workers themselves, the active one
    sent in batches of 1,000; the reports' sealed segments go to the same workers. Every figure
    of the report is the same as read in this process."""
    config, original = analysed
    topics = Topics(config.infrastructure.topic_prefix)
    decisions = config.infrastructure.data_path / "events" / topics.decisions
    records = _resegmented(decisions, 300_000)
    _resegmented(config.infrastructure.data_path / "events" / topics.feedback, 20_000)
    log = FileEventLog(config.infrastructure.data_path / "events")
    log.append(topics.decisions, [("again", records[0]), ("junk", b'{"not": "an event"}')])
    log.close()
    monkeypatch.setattr(log_batches, "PARALLEL_AFTER", 2_000)
    monkeypatch.setattr(scan, "BATCH_RECORDS", 1_000)
    sent: list[str] = []

    class Counted(log_batches._Flight):
        def put(self, kept: Any, task: Any, *args: Any) -> Any:
            sent.append(task.__name__)
            return super().put(kept, task, *args)

    monkeypatch.setattr(log_batches, "_Flight", Counted)
    as_of = (T0 + timedelta(days=2)).timestamp()
    alone = analyze_experiment(config, "by_quality", as_of=as_of, workers=1)
    assert not sent
    parallel = analyze_experiment(config, "by_quality", as_of=as_of, workers=2)
    assert {"_read_sealed", "read", "_read_reports"} <= set(sent), sent  # segments, the active one's batches
    sealed = len(SegmentLog(decisions, read_only=True).sealed_from(Position(0, 0)))
    assert 0 < sent.count("_read_sealed") < sealed  # the first 2,000 records were read here
    sent.clear()
    monkeypatch.setattr(log_batches, "PARALLEL_AFTER_BYTES", 1)  # a log known long: workers at once
    assert analyze_experiment(config, "by_quality", as_of=as_of, workers=2).model_dump() == alone.model_dump()
    assert sent.count("_read_sealed") == sealed
    assert parallel.model_dump() == alone.model_dump()
    assert [arm.decisions for arm in parallel.arms] == [arm.decisions for arm in original.arms]  # once


def _resegmented(topic: Path, segment_bytes: int) -> list[bytes]:
    """The topic's records written again in segments of about ``segment_bytes``; returns them."""
    records, _ = SegmentLog(topic, read_only=True).read(Position(0, 0), max_records=1 << 30)
    shutil.rmtree(topic)
    log = SegmentLog(topic, segment_bytes=segment_bytes)
    for start in range(0, len(records), 100):
        log.append(records[start : start + 100])
    log.close()
    assert len(SegmentLog(topic, read_only=True).segments()) > 3
    return records


def test_a_corrupt_sealed_segment_is_skipped_past_with_an_error_and_the_rest_is_read(
    analysed: tuple[ClosedLoopConfig, ExperimentReport], caplog: pytest.LogCaptureFixture
) -> None:
    """A record that does not parse in a sealed segment (a flipped byte on disk): the report
    logs where, skips the rest of that segment and reads every later segment."""
    config, original = analysed
    topic = config.infrastructure.data_path / "events" / Topics(config.infrastructure.topic_prefix).decisions
    _resegmented(topic, 300_000)
    corrupt = SegmentLog(topic, read_only=True).sealed_from(Position(0, 0))[1]
    held = len(corrupt.read())
    data = bytearray(corrupt.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    corrupt.path.write_bytes(bytes(data))
    report = analyze_experiment(config, "by_quality", as_of=(T0 + timedelta(days=2)).timestamp())
    assert "unreadable record in" in caplog.text
    assert str(corrupt.path) in caplog.text
    assert 0 < len(corrupt.read()) < held  # what comes before the flipped byte still reads
    before = sum(arm.decisions for arm in original.arms)
    assert before - held < sum(arm.decisions for arm in report.arms) < before
