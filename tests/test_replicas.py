"""Two `closedloop serve` processes sharing Redis and Kafka (service replicas, issue #16 point 6):
a decision made by one and its feedback sent to the other is joined by the trainer; a model swap
reaches both within the poll interval; experiment assignment is the same on both."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import lightgbm as lgb
import numpy as np
import pytest
import yaml
from conftest import REDIS_URL, Broker, serve_in_subprocess

from closedloop.contracts import parse_config
from closedloop.registry import open_registry, start_experiment
from closedloop.trainer import open_trainer

pytestmark = pytest.mark.integration

CONFIG = """
use_cases:
  pick:
    decision: choose
    candidate:
      price: {type: numeric, default: 1}
    outcomes:
      click: {type: binary, window: 30m}
    policy:
      value: click
      exploration: {strategy: epsilon_greedy, epsilon: 0.2}
    experiments:
      cheap_first:
        arms:
          control: {share: 0.5, control: true, policy: default}
          model: {share: 0.5}
"""
DECISIONS = 60


def _body(unit: str) -> dict[str, object]:
    return {
        "use_case": "pick",
        "unit_id": unit,
        "candidates": [{"id": "a", "features": {"price": 1}}, {"id": "b"}],
    }


def test_two_replicas_share_decisions_feedback_models_and_assignment(
    tmp_path: Path, broker: Broker, redis_prefix: str
) -> None:
    raw = yaml.safe_load(CONFIG)
    raw["infrastructure"] = {
        "redis_url": REDIS_URL,
        "kafka_bootstrap": broker.bootstrap,
        "key_prefix": redis_prefix,
        "topic_prefix": redis_prefix,
        "data_dir": str(tmp_path / "data"),  # one volume: an outbox slot each
    }
    path = tmp_path / "closedloop.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    config = parse_config(path.read_text(), environ={})
    with (
        serve_in_subprocess(path) as (first, _),
        serve_in_subprocess(path) as (second, _),
        httpx.Client(timeout=10) as http,
    ):
        decided = [http.post(f"{first}/v1/decide", json=_body(f"u{i}")).json() for i in range(DECISIONS)]
        for i, decision in enumerate(decided):  # every report to the other replica
            item = {"decision_id": decision["decision_id"], "outcomes": {"click": i % 2}}
            answer = http.post(f"{second}/v1/feedback", json=item)
            assert answer.status_code == 202, answer.text
            assert answer.json()["status"] == "accepted"

        registry = open_registry(config.infrastructure)
        x = np.random.default_rng(0).random((300, 1))
        booster = lgb.train(
            {"objective": "binary", "verbose": -1},
            lgb.Dataset(x, x[:, 0] > 0.5, feature_name=["price"]),
            5,
        )
        published = time.monotonic()
        version = registry.publish(
            "pick", "click", booster.model_to_string(), {"feature_names": ["price"]}, champion=True
        ).version
        seen: dict[str, float] = {}
        while len(seen) < 2 and time.monotonic() - published < 10:
            for url in (first, second):
                serving = http.get(f"{url}/v1/models").json()["use_cases"]["pick"]["click"]["serving"]
                if serving == version and url not in seen:
                    seen[url] = time.monotonic() - published
            time.sleep(0.05)
        assert set(seen) == {first, second}
        assert max(seen.values()) < 0.5 + 1.0  # the poll interval, and a margin for a busy machine

        experiment = config.use_cases["pick"].experiments["cheap_first"]
        start_experiment(registry, "pick", "cheap_first", experiment)
        time.sleep(1.5)  # both replicas poll the new phase
        arms = [
            (http.post(f"{first}/v1/decide", json=_body(f"e{i}")).json()["arm"],
             http.post(f"{second}/v1/decide", json=_body(f"e{i}")).json()["arm"])
            for i in range(40)
        ]  # fmt: skip
        registry.close()
    assert all(a == b for a, b in arms), arms
    assert {a for a, _ in arms} == {"control", "model"}

    later = (datetime.now(UTC) + timedelta(hours=1)).timestamp()
    trainer = open_trainer(config, clock=lambda: later)
    trainer.run_once(timeout=1.0)
    counters = trainer.store.counters()
    trainer.close()
    assert counters["feedback_joined"] == DECISIONS
    assert counters.get("orphan_reports", 0) == 0
