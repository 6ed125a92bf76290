"""The decision path in-process, on embedded stores (local registry, file event log, memory index)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest
from conftest import logged_events as logged
from conftest import make_config
from factories import train_model_text
from pydantic import TypeAdapter, ValidationError
from scipy import stats

from closedloop.contracts import (
    ClosedLoopConfig,
    DecideRequest,
    Exploration,
    FeedbackIn,
    InvalidRequestError,
    PayloadTooLargeError,
    RequestConflictError,
    UnknownUseCaseError,
    decode_decision,
    decode_feedback,
)
from closedloop.decision_service import DecisionEngine, MemoryDecisionIndex, open_engine
from closedloop.eventlog import FileEventLog, Position
from closedloop.policy import FeatureEncoder
from closedloop.registry import LocalModelRegistry


def engine_for(config: ClosedLoopConfig, seed: int = 7) -> DecisionEngine:
    return open_engine(config, seed=seed)


def publish(
    config: ClosedLoopConfig, engine: DecisionEngine, use_case: str, outcome: str, **kw: object
) -> str:
    registry = LocalModelRegistry(config.infrastructure.data_path / "registry")
    objective = "binary" if config.use_cases[use_case].outcomes[outcome].type == "binary" else "regression"
    text = train_model_text(engine.feature_names(use_case), objective=objective, **kw)  # type: ignore[arg-type]
    lineage = {"rows_train": 3, "rows_holdout": 1}  # SquareCB's gamma: 10 * sqrt(4) = 20
    version = registry.publish(
        use_case, outcome, text, {"note": "test", "lineage": lineage}, champion=True
    ).version
    engine.refresh_models()
    return version


def feed_request(n: int = 5, **context: object) -> DecideRequest:
    return DecideRequest.model_validate(
        {
            "use_case": "feed",
            "unit_id": "u1",
            "context": {"country": "de", **context},
            "candidates": [{"id": f"c{i}", "features": {"price": float(i), "topic": "a"}} for i in range(n)],
        }
    )


def test_default_policy_serves_before_any_model(config: ClosedLoopConfig) -> None:
    engine = engine_for(config)
    decision = engine.decide(feed_request())
    assert decision.policy == "default"
    assert decision.model_versions == {}
    assert sorted(decision.ranking or []) == [f"c{i}" for i in range(5)]
    assert 0 < decision.propensity <= 1
    engine.close()


def test_a_published_champion_is_served_and_its_version_logged(config: ClosedLoopConfig) -> None:
    engine = engine_for(config)
    click = publish(config, engine, "feed", "click")
    revenue = publish(config, engine, "feed", "revenue")
    decision = engine.decide(feed_request())
    assert decision.policy == "model"
    assert decision.model_versions == {"click": click, "revenue": revenue}
    event = decode_decision(logged(config, "decisions")[-1])
    assert event.event_id == decision.decision_id
    assert event.context == {"country": "de", "hour": 12}  # the default filled in, as seen
    assert [c.id for c in event.candidates] == [f"c{i}" for i in range(5)]
    assert set(event.candidates[0].predictions) == {"click", "revenue"}
    assert event.ranking == decision.ranking
    assert event.propensity == decision.propensity
    engine.close()


def test_an_incompatible_model_is_refused_and_the_old_one_keeps_serving(config: ClosedLoopConfig) -> None:
    engine = engine_for(config)
    good = publish(config, engine, "pick", "click")
    registry = LocalModelRegistry(config.infrastructure.data_path / "registry")
    registry.publish("pick", "click", train_model_text(["other"]), {}, champion=True)
    engine.refresh_models()
    decision = engine.decide(DecideRequest(use_case="pick", unit_id="u", candidates=[{"id": "a"}]))
    assert decision.model_versions == {"click": good}
    assert "pick/click" in engine.model_listing()["errors"]
    engine.close()


@pytest.mark.parametrize("dropped", ["slot", "slot and interactions"])
def test_a_ranking_model_of_an_earlier_version_is_served_on_the_columns_it_knows(
    config: ClosedLoopConfig, dropped: str
) -> None:
    """Models trained before the slot column (and before interactions) keep serving, on their
    leading columns, and score as they did."""
    engine = engine_for(config)
    names = engine.feature_names("feed")
    assert names[-1] == "slot"
    known = names[:-1] if dropped == "slot" else names[: names.index("price") + 2]
    registry = LocalModelRegistry(config.infrastructure.data_path / "registry")
    text = train_model_text(known)
    for outcome in ("click", "revenue"):
        registry.publish("feed", outcome, text, {}, champion=True)
    engine.refresh_models()
    assert not engine.model_listing()["errors"]
    request = feed_request(4)
    decision = engine.decide(request)
    assert decision.policy == "model"
    rows = FeatureEncoder(config.use_cases["feed"]).encode(
        request.context | {"hour": 12}, [c.features for c in request.candidates]
    )
    predicted = lgb.Booster(model_str=text).predict(rows[:, : len(known)])
    assert [c.predictions["click"] for c in decode_decision(logged(config, "decisions")[-1]).candidates] == (
        pytest.approx(list(predicted))
    )
    engine.close()


def _frequencies_match(choices: list[str], propensities: dict[str, float]) -> float:
    counts = Counter(choices)
    ids = sorted(propensities)
    observed = np.array([counts[i] for i in ids], dtype=float)
    expected = np.array([propensities[i] for i in ids]) * len(choices)
    assert abs(sum(propensities.values()) - 1.0) < 1e-9
    return float(stats.chisquare(observed, expected).pvalue)


def _exploring_by(config: ClosedLoopConfig, use_case: str, strategy: str) -> ClosedLoopConfig:
    if strategy == "as configured":
        return config
    exploration = TypeAdapter(Exploration).validate_python({"strategy": strategy})
    changed = config.use_cases[use_case].model_copy(
        update={"policy": config.use_cases[use_case].policy.model_copy(update={"exploration": exploration})}
    )
    return config.model_copy(update={"use_cases": {**config.use_cases, use_case: changed}})


@pytest.mark.parametrize("strategy", ["as configured", "squarecb"])
@pytest.mark.parametrize("use_case", ["feed", "pick", "notify"])
def test_choice_frequencies_match_logged_propensities(
    config: ClosedLoopConfig, use_case: str, strategy: str
) -> None:
    """Over many identical decisions, each option's share matches the propensity logged with it,
    and every decision returns and logs the whole distribution it drew from."""
    config = _exploring_by(config, use_case, strategy)
    engine = engine_for(config, seed=11)
    for outcome in config.use_cases[use_case].outcomes:
        publish(config, engine, use_case, outcome, weight_of_first=1.0)
    request = {
        "feed": feed_request(4, hour=3.0),
        "pick": DecideRequest.model_validate(
            {
                "use_case": "pick",
                "unit_id": "u",
                "candidates": [{"id": f"p{i}", "features": {"price": i / 4}} for i in range(4)],
            }
        ),
        "notify": DecideRequest(use_case="notify", unit_id="u", context={"days": 0.1}),
    }[use_case]
    choices: list[str] = []
    propensities: dict[str, float] = {}
    for _ in range(4000):
        decision = engine.decide(request)
        assert decision.choice is not None
        choices.append(decision.choice)
        propensities.setdefault(decision.choice, decision.propensity)
        assert propensities[decision.choice] == pytest.approx(decision.propensity)
        assert decision.probabilities[decision.choice] == pytest.approx(decision.propensity)
    assert len(propensities) == len(decision.scores), "every option must be explored"
    assert decision.probabilities == pytest.approx(propensities)
    assert _frequencies_match(choices, propensities) > 0.001
    event = decode_decision(logged(config, "decisions")[-1])
    assert {c.id: c.probability for c in event.candidates} == pytest.approx(decision.probabilities)
    if strategy == "squarecb":
        assert event.exploration["gamma"] == pytest.approx(20.0)  # from the examples the models learned
    engine.close()


@pytest.mark.parametrize(
    ("change", "error", "field"),
    [
        ({"use_case": "nope"}, UnknownUseCaseError, "use_case"),
        ({"context": {"country": "de", "hour": "noon"}}, InvalidRequestError, "context.hour"),
        ({"context": {"country": "de", "hour": float("nan")}}, InvalidRequestError, "context.hour"),
        ({"context": {"country": "de", "hour": float("inf")}}, InvalidRequestError, "context.hour"),
        ({"context": {"country": 3}}, InvalidRequestError, "context.country"),
        ({"context": {"contry": "de"}}, InvalidRequestError, "context.contry"),
        (
            {"candidates": [{"id": "a", "features": {"topic": "a"}}]},
            InvalidRequestError,
            "candidates[0].features.price",
        ),
        (
            {"candidates": [{"id": "a", "features": {"price": 1, "topic": "a"}}] * 2},
            InvalidRequestError,
            "candidates.id",
        ),
        ({"candidates": []}, InvalidRequestError, "candidates"),
        (
            {"candidates": [{"id": f"c{i}", "features": {"price": 1, "topic": "a"}} for i in range(31)]},
            PayloadTooLargeError,
            "candidates",
        ),
    ],
)
def test_bad_decide_requests_name_the_field(
    config: ClosedLoopConfig, change: dict[str, object], error: type[Exception], field: str
) -> None:
    engine = engine_for(config)
    request = DecideRequest.model_validate({**feed_request().model_dump(), **change})
    with pytest.raises(error) as caught:
        engine.decide(request)
    assert caught.value.field == field  # type: ignore[attr-defined]
    assert logged(config, "decisions") == []
    engine.close()


def test_an_unknown_category_is_scored_as_missing_not_refused(config: ClosedLoopConfig) -> None:
    engine = engine_for(config)
    publish(config, engine, "feed", "click")
    publish(config, engine, "feed", "revenue")
    request = feed_request()
    request.candidates[0].features["topic"] = "brand-new-topic"
    decision = engine.decide(request)
    assert decision.policy == "model"
    assert 'closedloop_unknown_categories_total{use_case="feed"} 1.0' in engine.render_metrics().decode()
    engine.close()


def test_feedback_is_counted_once_and_orphans_are_kept(config: ClosedLoopConfig) -> None:
    engine = engine_for(config)
    decision = engine.decide(feed_request())
    first = FeedbackIn(decision_id=decision.decision_id, outcomes={"click": 1}, feedback_id="f1")
    results = engine.log_feedback(
        [
            first,
            first,  # a retry of the same report
            FeedbackIn(decision_id=decision.decision_id, outcomes={"click": 0}, feedback_id="f2"),
            FeedbackIn(decision_id=decision.decision_id, outcomes={"revenue": 3.5}),
            FeedbackIn(decision_id="never-made", outcomes={"click": 1}),
            FeedbackIn(decision_id=decision.decision_id, outcomes={"clik": 1}),
            FeedbackIn(decision_id=decision.decision_id, outcomes={"click": 2}),
        ]
    )
    assert [r.status for r in results] == [
        "accepted",
        "replayed",
        "duplicate",
        "accepted",
        "orphan",
        "invalid",
        "invalid",
    ]
    assert results[2].error
    assert results[2].error["field"] == "outcomes.click"
    assert results[5].error
    assert results[5].error["field"] == "outcomes.clik"
    events = [decode_feedback(r) for r in logged(config, "feedback")]
    assert [(e.outcomes, e.orphan) for e in events] == [
        ({"click": 1.0}, False),
        ({"revenue": 3.5}, False),
        ({"click": 1.0}, True),
    ]
    assert events[2].use_case is None
    engine.close()


def test_a_repeated_request_id_returns_the_same_decision_logged_once(config: ClosedLoopConfig) -> None:
    engine = engine_for(config)
    request = feed_request().model_copy(update={"request_id": "r-1"})
    first, again = engine.decide(request), engine.decide(request)
    assert again.decision_id == first.decision_id
    assert len(logged(config, "decisions")) == 1
    engine.close()


def test_events_survive_a_restart_of_the_embedded_log(config: ClosedLoopConfig, tmp_path: Path) -> None:
    engine = engine_for(config)
    ids = [engine.decide(feed_request()).decision_id for _ in range(20)]
    engine.close()
    reopened = FileEventLog(config.infrastructure.data_path / "events")
    records, _ = reopened.read("closedloop.decisions", Position(0, 0))
    assert [decode_decision(r).event_id for r in records] == ids
    reopened.close()


def test_a_request_id_is_replayed_only_for_the_same_use_case_and_unit(config: ClosedLoopConfig) -> None:
    engine = engine_for(config)
    first = engine.decide(feed_request().model_copy(update={"request_id": "r-1"}))
    again = engine.decide(feed_request().model_copy(update={"request_id": "r-1"}))
    assert again == first
    for change in (
        {"unit_id": "someone-else"},
        {"use_case": "pick", "context": {}, "candidates": [{"id": "a"}]},
    ):
        request = DecideRequest.model_validate({**feed_request().model_dump(), **change, "request_id": "r-1"})
        with pytest.raises(RequestConflictError) as caught:
            engine.decide(request)
        assert (caught.value.field, caught.value.value) == ("request_id", "r-1")
        assert caught.value.http_status == 409
    assert len(logged(config, "decisions")) == 1
    engine.close()


class _RacingIndex(MemoryDecisionIndex):
    """Another request with the same request id claims it between this one's check and commit."""

    def __init__(self) -> None:
        super().__init__()
        self.hide_claims = True

    def lookup(self, keys: Sequence[str]) -> list[str | None]:
        found = super().lookup(keys)
        if self.hide_claims and any(":request:" in key for key in keys):
            self.hide_claims = False
            return [None for _ in keys]
        return found


def test_a_decision_logged_then_refused_in_a_race_for_its_request_id_is_abandoned(
    config: ClosedLoopConfig,
) -> None:
    index = _RacingIndex()
    engine = DecisionEngine(
        config,
        registry=LocalModelRegistry(config.infrastructure.data_path / "registry"),
        event_log=FileEventLog(config.infrastructure.data_path / "events"),
        index=index,
    )
    first = engine.decide(DecideRequest.model_validate({**feed_request().model_dump(), "request_id": "r-1"}))
    index.hide_claims = True
    other_unit = {**feed_request().model_dump(), "unit_id": "u2", "request_id": "r-1"}
    with pytest.raises(RequestConflictError):
        engine.decide(DecideRequest.model_validate(other_unit))
    decisions = [decode_decision(r).event_id for r in logged(config, "decisions")]
    assert len(decisions) == 2  # the refused one was logged before its claim failed
    refused = next(d for d in decisions if d != first.decision_id)
    activations = [(e.decision_id, e.activation) for e in map(decode_feedback, logged(config, "feedback"))]
    assert activations == [(refused, "abandon")]
    engine.close()


def test_a_feedback_id_is_scoped_to_its_decision(config: ClosedLoopConfig) -> None:
    engine = engine_for(config)
    one, two = engine.decide(feed_request()), engine.decide(feed_request())
    results = engine.log_feedback(
        [
            FeedbackIn(decision_id=one.decision_id, outcomes={"click": 1}, feedback_id="same-id"),
            FeedbackIn(decision_id=two.decision_id, outcomes={"click": 1}, feedback_id="same-id"),
        ]
    )
    assert [r.status for r in results] == ["accepted", "accepted"]
    assert sorted(decode_feedback(r).decision_id for r in logged(config, "feedback")) == sorted(
        [one.decision_id, two.decision_id]
    )
    engine.close()


def test_a_value_that_is_not_finite_at_run_time_falls_back_to_the_default_policy(tmp_path: Path) -> None:
    """``click / revenue`` is finite on ordinary predictions (it passes validation), but a revenue
    model that predicts 0 makes it infinite: that decision is the default policy's, and counted."""
    import lightgbm as lgb
    import yaml
    from conftest import CONFIG_YAML

    from closedloop.contracts import parse_config

    raw = yaml.safe_load(CONFIG_YAML)
    raw["use_cases"]["feed"]["policy"]["value"] = "click / revenue"
    raw["infrastructure"] = {"data_dir": str(tmp_path / "data")}
    config = parse_config(yaml.safe_dump(raw, sort_keys=False), environ={})
    engine = engine_for(config)
    publish(config, engine, "feed", "click")
    names = engine.feature_names("feed")
    rng = np.random.default_rng(0)
    zero = lgb.train(
        {"objective": "regression", "verbose": -1},
        lgb.Dataset(rng.normal(size=(200, len(names))), np.zeros(200), feature_name=names),
        num_boost_round=3,
    )
    LocalModelRegistry(config.infrastructure.data_path / "registry").publish(
        "feed", "revenue", zero.model_to_string(), {}, champion=True
    )
    engine.refresh_models()
    decision = engine.decide(feed_request())
    assert decision.policy == "default"
    assert 'closedloop_value_not_finite_total{use_case="feed"} 1.0' in engine.render_metrics().decode()
    engine.close()


def test_reports_out_of_their_declared_range_or_before_their_decision_are_refused(tmp_path: Path) -> None:
    import yaml
    from conftest import CONFIG_YAML

    from closedloop.contracts import parse_config

    raw = yaml.safe_load(CONFIG_YAML)
    raw["use_cases"]["feed"]["outcomes"]["revenue"].update({"min": 0, "max": 1000})
    raw["infrastructure"] = {"data_dir": str(tmp_path / "data")}
    config = parse_config(yaml.safe_dump(raw, sort_keys=False), environ={})
    engine = engine_for(config)
    decision = engine.decide(feed_request())
    made = decode_decision(logged(config, "decisions")[-1]).timestamp
    results = engine.log_feedback(
        [
            FeedbackIn(decision_id=decision.decision_id, outcomes={"revenue": -5}),
            FeedbackIn(decision_id=decision.decision_id, outcomes={"revenue": 5000}),
            FeedbackIn(
                decision_id=decision.decision_id, outcomes={"click": 1}, timestamp=made - timedelta(hours=1)
            ),
            FeedbackIn(decision_id=decision.decision_id, outcomes={"revenue": 12.5}),
        ]
    )
    assert [r.status for r in results] == ["invalid", "invalid", "invalid", "accepted"]
    assert [r.error["field"] for r in results[:3] if r.error] == [
        "outcomes.revenue",
        "outcomes.revenue",
        "timestamp",
    ]
    assert results[0].error
    assert results[0].error["expected"] == "at least 0.0 and at most 1000.0"
    with pytest.raises(ValidationError, match="after 2000-01-01"):
        FeedbackIn(decision_id="d", outcomes={"click": 1}, timestamp=datetime(1999, 12, 31, tzinfo=UTC))
    engine.close()


def test_an_orphan_flood_is_capped_and_counted(tmp_path: Path) -> None:
    base = make_config(tmp_path)
    infrastructure = base.infrastructure.model_copy(update={"max_orphans_per_second": 1.0})
    config = base.model_copy(update={"infrastructure": infrastructure})  # ten seconds' worth: 10
    engine = engine_for(config)
    results = engine.log_feedback(
        [FeedbackIn(decision_id=f"made-up-{i}", outcomes={"click": 1}) for i in range(25)]
    )
    assert [r.status for r in results] == ["orphan"] * 25
    kept = [decode_feedback(r).decision_id for r in logged(config, "feedback")]
    assert kept == [f"made-up-{i}" for i in range(10)]
    assert results[10].error
    assert "not kept" in results[10].error["message"]
    assert "closedloop_orphans_dropped_total 15.0" in engine.render_metrics().decode()
    engine.close()


@pytest.mark.parametrize("strategy", ["as configured", "squarecb", "softmax"])
def test_each_shown_slot_of_a_ranking_is_drawn_with_its_logged_propensity(
    config: ClosedLoopConfig, strategy: str
) -> None:
    """With ``slots``, the first slots of a ranking are explored in turn: over many identical
    decisions, each (slot 1, slot 2) pair's share matches the product of the two logged
    propensities (the second given the first)."""
    config = _exploring_by(config, "feed", strategy)
    engine = engine_for(config, seed=5)
    for outcome in config.use_cases["feed"].outcomes:
        publish(config, engine, "feed", outcome, weight_of_first=1.0)
    body = {**feed_request(4, hour=3.0).model_dump(), "slots": 2}
    pairs: list[str] = []
    expected: dict[str, float] = {}
    for _ in range(4000):
        decision = engine.decide(DecideRequest.model_validate(body))
        assert decision.ranking is not None
        assert decision.slot_propensities is not None
        assert len(decision.slot_propensities) == 2
        assert sorted(decision.ranking) == [f"c{i}" for i in range(4)]  # the rest follow, unshown
        pair = f"{decision.ranking[0]}>{decision.ranking[1]}"
        pairs.append(pair)
        joint = decision.slot_propensities[0] * decision.slot_propensities[1]
        assert expected.setdefault(pair, joint) == pytest.approx(joint)
        assert decision.slot_propensities[0] == pytest.approx(decision.propensity)
    # pairs never drawn have probability too: what was seen must not exceed 1, and be most of it
    assert 0.97 < sum(expected.values()) <= 1.0 + 1e-9
    counts = Counter(pairs)
    seen = sorted(expected)
    observed = np.array([counts[p] for p in seen], dtype=float)
    shares = np.array([expected[p] for p in seen])
    assert float(stats.chisquare(observed, shares / shares.sum() * len(pairs)).pvalue) > 0.001
    event = decode_decision(logged(config, "decisions")[-1])
    assert event.slots is not None
    assert [(s.candidate, s.propensity) for s in event.slots] == list(
        zip(decision.ranking[:2], decision.slot_propensities, strict=True)
    )
    engine.close()
