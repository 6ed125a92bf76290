"""The decision service on real Redis and a real Kafka-protocol broker (Tansu)."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from conftest import REDIS_URL, Broker, Server, consume_all, make_config
from factories import train_model_text

from closedloop.contracts import ClosedLoopConfig, Topics, decode_decision, decode_feedback
from closedloop.decision_service import create_app, open_engine
from closedloop.registry import RedisModelRegistry
from closedloop.sdk import Client

pytestmark = pytest.mark.integration

FEED = {f"c{i}": {"price": float(i), "topic": "abc"[i % 3]} for i in range(10)}


@pytest.fixture
def live_config(tmp_path: Path, redis_prefix: str, broker: Broker) -> ClosedLoopConfig:
    return make_config(
        tmp_path,
        redis_url=REDIS_URL,
        kafka_bootstrap=broker.bootstrap,
        key_prefix=redis_prefix,
        topic_prefix=redis_prefix,
    )


@pytest.fixture
def registry(redis_prefix: str) -> Iterator[RedisModelRegistry]:
    registry = RedisModelRegistry.from_url(REDIS_URL, prefix=redis_prefix)
    yield registry
    registry.close()


def publish_feed_models(registry: RedisModelRegistry, names: list[str], seed: int) -> dict[str, str]:
    return {
        outcome: registry.publish(
            "feed",
            outcome,
            train_model_text(names, objective=objective, seed=seed),
            {"seed": seed},
            champion=True,
        ).version
        for outcome, objective in (("click", "binary"), ("revenue", "regression"))
    }


def test_the_redis_registry_keeps_versions_and_champions(registry: RedisModelRegistry) -> None:
    text = train_model_text(["x", "y"])
    first = registry.publish("feed", "click", text, {"auc": 0.7}, champion=True)
    second = registry.publish("feed", "click", text, {"auc": 0.8}, champion=False)
    assert (first.version[:3], second.version[:3]) == ("v1-", "v2-")  # numbered, then a content id
    assert registry.champion("feed", "click") == first.version
    generation = registry.generation()
    registry.set_champion("feed", "click", second.version)
    assert registry.champion("feed", "click") == second.version
    assert registry.generation() > generation  # it moved (by at least one)
    assert [v.metadata["auc"] for v in registry.versions("feed", "click")] == [0.7, 0.8]
    assert registry.model_text("feed", "click", second.version) == text
    with pytest.raises(KeyError):
        registry.set_champion("feed", "click", "v9")
    every = registry.all_champions({"feed": ["click", "revenue"], "pick": ["click"]})
    assert every == {"feed": {"click": second.version, "revenue": None}, "pick": {"click": None}}


def test_models_from_redis_are_served_and_hot_swapped_under_load(
    live_config: ClosedLoopConfig, registry: RedisModelRegistry, serve: Callable[[object], Server]
) -> None:
    engine = open_engine(live_config, seed=1)
    names = engine.feature_names("feed")
    first = publish_feed_models(registry, names, seed=1)
    engine.refresh_models()
    server = serve(create_app(live_config, engine=engine, refresh_interval=0.05))
    errors: list[str] = []
    versions: Counter[str] = Counter()
    stop = threading.Event()

    def hammer() -> None:
        with httpx.Client(base_url=server.url, timeout=5) as http:
            while not stop.is_set():
                response = http.post(
                    "/v1/decide",
                    json={
                        "use_case": "feed",
                        "unit_id": "u",
                        "candidates": [{"id": cid, "features": f} for cid, f in FEED.items()],
                    },
                )
                if response.status_code != 200:
                    errors.append(response.text)
                else:
                    versions[response.json()["model_versions"]["click"]] += 1

    workers = [threading.Thread(target=hammer) for _ in range(4)]
    for worker in workers:
        worker.start()
    time.sleep(0.5)
    second = publish_feed_models(registry, names, seed=2)
    deadline = time.monotonic() + 10
    while versions[second["click"]] < 50 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    for worker in workers:
        worker.join()
    engine.close()
    assert errors == []
    assert versions[first["click"]] > 0
    assert versions[second["click"]] >= 50
    assert set(versions) == {first["click"], second["click"]}


def test_decisions_and_feedback_arrive_on_their_topics_with_every_field(
    live_config: ClosedLoopConfig, registry: RedisModelRegistry, serve: Callable[[object], Server]
) -> None:
    engine = open_engine(live_config, seed=3)
    publish_feed_models(registry, engine.feature_names("feed"), seed=3)
    engine.refresh_models()
    server = serve(create_app(live_config, engine=engine))
    with Client(server.url, timeout=5, batch_size=20) as client:
        decisions = [
            client.decide("feed", f"user-{i}", context={"country": "de"}, candidates=FEED) for i in range(30)
        ]
        for decision in decisions:
            client.log_feedback(decision.decision_id, {"click": 1, "revenue": 2.5})
        assert client.flush()
    topics = Topics(live_config.infrastructure.topic_prefix)
    assert engine.wait_until_delivered(30)
    bootstrap = live_config.infrastructure.kafka_bootstrap or ""
    logged = [decode_decision(v) for v in consume_all(bootstrap, topics.decisions, expected=30)]
    feedback = [decode_feedback(v) for v in consume_all(bootstrap, topics.feedback, expected=30)]
    engine.close()
    by_id = {event.event_id: event for event in logged}
    assert sorted(by_id) == sorted(d.decision_id for d in decisions)
    for decision in decisions:
        event = by_id[decision.decision_id]
        assert event.unit_id.startswith("user-")
        assert event.context == {"country": "de", "hour": 12}
        assert [c.id for c in event.candidates] == list(FEED)
        assert all(set(c.predictions) == {"click", "revenue"} for c in event.candidates)
        assert event.ranking == decision.ranking
        assert event.propensity == decision.propensity
        assert event.model_versions == decision.model_versions
        assert event.policy == "model"
        assert event.exploration == {"strategy": "epsilon_greedy", "epsilon": 0.2}
    assert sorted(f.decision_id for f in feedback) == sorted(by_id)
    assert all(f.outcomes == {"click": 1.0, "revenue": 2.5} and f.use_case == "feed" for f in feedback)


def test_acknowledged_events_survive_a_broker_outage_exactly_once(
    live_config: ClosedLoopConfig, broker: Broker, serve: Callable[[object], Server]
) -> None:
    engine = open_engine(live_config, seed=4)
    assert engine.status().event_log["backend"] == "kafka"
    server = serve(create_app(live_config, engine=engine))
    topic = Topics(live_config.infrastructure.topic_prefix).decisions
    acknowledged: list[str] = []

    def decide(count: int) -> None:
        with httpx.Client(base_url=server.url, timeout=5) as http:
            for i in range(count):
                response = http.post(
                    "/v1/decide",
                    json={"use_case": "pick", "unit_id": f"u{i}", "candidates": [{"id": "a"}, {"id": "b"}]},
                )
                assert response.status_code == 200
                acknowledged.append(response.json()["decision_id"])

    decide(100)
    assert engine.wait_until_delivered(30)
    before = consume_all(broker.bootstrap, topic, expected=100)
    broker.stop()
    decide(150)  # served and acknowledged while the broker is down
    assert engine.status().event_log["backlog"] is True
    broker.start()  # empty: its storage is memory
    assert engine.wait_until_delivered(60)
    after = consume_all(broker.bootstrap, topic, expected=150)
    engine.close()
    received = [decode_decision(v).event_id for v in before + after]
    assert len(acknowledged) == 250
    missing = set(acknowledged) - set(received)
    repeated = [i for i, n in Counter(received).items() if n > 1]
    assert (len(before), len(after), len(missing), len(repeated)) == (100, 150, 0, 0)
    assert Counter(received) == Counter(acknowledged)  # every one, exactly once
