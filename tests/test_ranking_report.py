"""An experiment on a ranking decided with slots, through the real engine and the logs, on a
position-biased truth: a click in slot k happens with probability examination(k) * relevance.
The report values each arm slot by slot; the numbers are checked against the estimator computed
independently from the logged events, and against the truth."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
import yaml
from conftest import logged_events

from closedloop.contracts import ClosedLoopConfig, DecideRequest, FeedbackIn, decode_decision, parse_config
from closedloop.decision_service import open_engine
from closedloop.evaluation import ExperimentReport, analyze_experiment
from closedloop.registry import open_registry, start_experiment

T0 = datetime(2026, 11, 1, tzinfo=UTC)
CANDIDATES, SLOTS = 5, 3
EXAMINATION = np.array([1.0, 0.5, 0.25])
EPSILON = {"narrow": 0.2, "wide": 0.7}
SHELF_YAML = """
use_cases:
  shelf:
    decision: rank
    candidate:
      quality: {type: numeric}
    outcomes:
      click: {type: binary, window: 1h}
    policy:
      value: click
      exploration: {strategy: epsilon_greedy, epsilon: 0.2}
      default: {order: feature, feature: quality}
    experiments:
      breadth:
        arms:
          narrow: {share: 0.5, control: true, policy: default, epsilon: 0.2}
          wide: {share: 0.5, policy: default, epsilon: 0.7}
"""


def _relevance(quality: np.ndarray) -> np.ndarray:
    return 0.1 + 0.7 * quality


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
def experiment(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[ClosedLoopConfig, ExperimentReport, dict[str, list[float]]]:
    raw = yaml.safe_load(SHELF_YAML)
    raw["infrastructure"] = {"data_dir": str(tmp_path_factory.mktemp("shelf") / "data")}
    config = parse_config(yaml.safe_dump(raw), environ={})
    registry = open_registry(config.infrastructure)
    start_experiment(
        registry, "shelf", "breadth", config.use_cases["shelf"].experiments["breadth"], now=T0.timestamp()
    )
    clock = Clock()
    engine = open_engine(config, seed=4, clock=clock)
    rng = np.random.default_rng(4)
    clicks_per_ranking: dict[str, list[float]] = {"narrow": [], "wide": []}
    for unit in range(4000):
        clock.now += timedelta(seconds=1)
        quality = rng.random(CANDIDATES)
        decision = engine.decide(
            DecideRequest.model_validate(
                {
                    "use_case": "shelf",
                    "unit_id": f"u{unit}",
                    "candidates": [
                        {"id": f"i{k}", "features": {"quality": float(q)}} for k, q in enumerate(quality)
                    ],
                    "slots": SLOTS,
                }
            )
        )
        assert decision.ranking is not None
        clicks = 0
        for slot, candidate in enumerate(decision.ranking[:SLOTS]):
            if rng.random() < EXAMINATION[slot] * _relevance(quality[int(candidate[1:])]):
                clicks += 1
                item = FeedbackIn(
                    decision_id=decision.decision_id, outcomes={"click": 1}, candidate_id=candidate
                )
                assert engine.log_feedback([item])[0].status == "accepted"
        clicks_per_ranking[str(decision.arm)].append(clicks)
    assert engine.wait_until_delivered(60)
    engine.close()
    registry.close()
    report = analyze_experiment(config, "breadth", as_of=(T0 + timedelta(days=1)).timestamp())
    return config, report, clicks_per_ranking


def _true_value(epsilon: float, n: int = 200_000) -> float:
    """Expected clicks of the default policy (quality order) exploring slot by slot with epsilon."""
    rng = np.random.default_rng(9)
    quality = rng.random((n, CANDIDATES))
    placed = np.zeros((n, CANDIDATES), dtype=bool)
    value = np.zeros(n)
    for slot in range(SLOTS):
        greedy = np.where(placed, -1.0, quality).argmax(axis=1)
        uniform = np.where(placed, -1.0, rng.random((n, CANDIDATES))).argmax(axis=1)  # among the rest
        pick = np.where(rng.random(n) < epsilon, uniform, greedy)
        value += EXAMINATION[slot] * _relevance(quality[np.arange(n), pick])
        placed[np.arange(n), pick] = True
    return float(value.mean())


def _independent_estimate(config: ClosedLoopConfig, epsilon: float) -> float:
    """The cascade IPS of the quality-ordered policy exploring with ``epsilon``, computed here from
    the logged decision and feedback events."""
    from closedloop.contracts import decode_feedback

    clicked = {
        (e.decision_id, e.candidate_id or "")
        for e in map(decode_feedback, logged_events(config, "feedback"))
        if e.outcomes
    }
    totals = []
    for record in logged_events(config, "decisions"):
        event = decode_decision(record)
        assert event.slots is not None
        quality = {c.id: float(c.features["quality"]) for c in event.candidates}  # type: ignore[arg-type]
        remaining = sorted(quality, key=lambda c: -quality[c])
        weight, total = 1.0, 0.0
        for slot in event.slots:
            greedy = remaining[0]
            target = (1 - epsilon) * (slot.candidate == greedy) + epsilon / len(remaining)
            weight *= target / slot.propensity
            total += weight * ((event.event_id, slot.candidate) in clicked)
            remaining.remove(slot.candidate)
        totals.append(total)
    return float(np.mean(totals))


def test_the_report_values_each_arm_over_every_shown_slot(
    experiment: tuple[ClosedLoopConfig, ExperimentReport, dict[str, list[float]]],
) -> None:
    config, report, clicks = experiment
    assert report.ope is not None
    ranking = report.ope.ranking
    assert ranking is not None
    assert (ranking.rankings, ranking.slots) == (4000, SLOTS)
    logged = sum(map(sum, clicks.values())) / 4000
    assert ranking.logged_value.estimate == pytest.approx(logged)
    by_arm = {p.policy: p for p in ranking.policies}
    for arm, epsilon in EPSILON.items():
        estimate = by_arm[arm].ips
        assert estimate.estimate == pytest.approx(_independent_estimate(config, epsilon), rel=1e-9)
        truth = _true_value(epsilon)
        assert estimate.low is not None
        assert estimate.high is not None
        assert estimate.low <= truth <= estimate.high, (arm, truth, estimate)
    # the narrow arm's exploration costs less: the estimates see it
    assert by_arm["narrow"].ips.estimate > by_arm["wide"].ips.estimate  # type: ignore[operator]


def test_a_rankings_outcome_in_the_experiment_is_its_clicks_over_every_slot(
    experiment: tuple[ClosedLoopConfig, ExperimentReport, dict[str, list[float]]],
) -> None:
    _, report, clicks = experiment
    metric = next(m for m in report.metrics if m.name == "click")
    means = {a.arm: a.mean for a in metric.arms}
    for arm in EPSILON:
        assert means[arm] == pytest.approx(float(np.mean(clicks[arm])))
