"""An experiment followed while it runs (`ExperimentWatch`, what the online tuner polls): each report
reads only the events logged since the previous one, and says exactly what a fresh analysis of the
whole log says, with late feedback for earlier decisions joined. On files and on the Tansu broker."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from conftest import Broker
from test_evaluation_experiment import T0, Clock, buy_probability, offer_config, offer_decision, quality_model

from closedloop.contracts import ClosedLoopConfig, FeedbackIn
from closedloop.decision_service import DecisionEngine, open_engine
from closedloop.evaluation import ExperimentWatch, analyze_experiment
from closedloop.registry import open_registry, start_experiment


def serve(
    engine: DecisionEngine, clock: Clock, units: range, rng: np.random.Generator, late: list[str]
) -> tuple[int, int, list[str]]:
    """Two decisions per unit; a buy reported at once, or (every third) in the next stage.
    Returns the decisions and feedback logged now, and the decisions whose buy comes later."""
    decisions = feedback = 0
    deferred: list[str] = []
    for decision_id in late:  # feedback, within its window, for decisions of the previous stage
        engine.log_feedback([FeedbackIn(decision_id=decision_id, outcomes={"buy": 1}, timestamp=clock.now)])
        feedback += 1
    for unit in units:
        segment = "a" if rng.random() < 0.7 else "b"
        for _ in range(2):
            decision_id, quality = offer_decision(engine, clock, unit, segment, rng)
            decisions += 1
            if rng.random() < buy_probability(segment, quality):
                if unit % 3 == 0:
                    deferred.append(decision_id)
                    continue
                engine.log_feedback(
                    [FeedbackIn(decision_id=decision_id, outcomes={"buy": 1}, timestamp=clock.now)]
                )
                feedback += 1
    assert engine.wait_until_delivered(60)
    return decisions, feedback, deferred


def follow_an_experiment(config: ClosedLoopConfig) -> None:
    registry = open_registry(config.infrastructure)
    registry.publish("offer", "buy", quality_model(), {}, champion=True)
    start_experiment(
        registry,
        "offer",
        "by_quality",
        config.use_cases["offer"].experiments["by_quality"],
        now=T0.timestamp(),
    )
    clock, rng = Clock(), np.random.default_rng(7)
    engine = open_engine(config, seed=7, clock=clock)
    as_of = (T0 + timedelta(days=2)).timestamp()
    watch = ExperimentWatch(config, "by_quality", registry=registry)
    try:
        logged, reported, late = serve(engine, clock, range(0, 800), rng, [])
        first = watch.report(as_of=as_of)
        assert watch.records_read == logged + reported
        assert sum(arm.units for arm in first.arms) == 800

        logged, reported, _ = serve(engine, clock, range(800, 1500), rng, late)
        before = watch.records_read
        second = watch.report(as_of=as_of)
        assert watch.records_read - before == logged + reported  # only what is new was read
        assert len(late) > 20
        fresh = analyze_experiment(config, "by_quality", registry=registry, as_of=as_of)
        assert sum(arm.units for arm in second.arms) == 1500
        # Everything, the late buys included, as a fresh read of the whole log says it.
        assert second.model_dump() == fresh.model_dump()
        assert second.model_dump() != first.model_dump()
    finally:
        watch.close()
        engine.close()
        registry.close()


def test_a_watch_on_files_reads_only_new_events_and_agrees_with_a_fresh_analysis(tmp_path: Path) -> None:
    follow_an_experiment(offer_config(tmp_path))


@pytest.mark.slow
def test_a_watch_on_kafka_reads_only_new_events_and_agrees_with_a_fresh_analysis(
    tmp_path: Path, broker: Broker
) -> None:
    config = offer_config(tmp_path)
    infrastructure = config.infrastructure.model_copy(
        update={"kafka_bootstrap": broker.bootstrap, "topic_prefix": "watch"}
    )
    follow_an_experiment(config.model_copy(update={"infrastructure": infrastructure}))
