"""The whole loop on real services: Redis (registry, decision index), the Kafka-protocol broker
(event log), and SQLite or PostgreSQL (examples). Decisions are logged, feedback is joined,
windows close with defaults, models are trained, gated, promoted, hot-swapped into the serving
engine and then used. (Early, late and duplicate feedback, which this run meets only by chance,
are pinned down one by one in test_trainer_join.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import REDIS_URL, Broker, Database

from closedloop.contracts import RetrainTrigger
from closedloop.registry import RedisModelRegistry
from closedloop.simulator import Demo, demo_config

pytestmark = pytest.mark.integration

FAST_GROUP = {"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000, "max_poll_interval_ms": 8000}


def test_the_loop_learns_on_redis_kafka_and_sql(
    tmp_path: Path, redis_prefix: str, broker: Broker, database: Database
) -> None:
    config = demo_config(
        data_dir=str(tmp_path / "data"),
        redis_url=REDIS_URL,
        kafka_bootstrap=broker.bootstrap,
        database_url=database.url,
        key_prefix=redis_prefix,
        topic_prefix=redis_prefix,
    )
    # Retrain every round of this shorter run (the demo's own trigger waits for 2000 labels).
    use_case = config.use_cases["recommend"].model_copy(
        update={"retrain": RetrainTrigger(min_new_examples=700)}
    )
    config = config.model_copy(update={"use_cases": {"recommend": use_case}})
    demo = Demo(config, seed=3, consumer_config=FAST_GROUP, database_schema=database.schema)
    try:
        result = demo.run(rounds=5, decisions_per_round=800)
        served = demo.client.serving_versions("recommend")
        store = demo.trainer.store
        counters = store.counters()
        with store.engine.connect() as connection:
            by_source = dict(
                connection.execute(sa.text("SELECT source, COUNT(*) FROM cl_labels GROUP BY source")).all()
            )
            per_pair = connection.execute(
                sa.text(
                    "SELECT MAX(n) FROM (SELECT COUNT(*) AS n FROM cl_labels GROUP BY decision_id, outcome) t"
                )
            ).scalar_one()
    finally:
        demo.close()

    registry = RedisModelRegistry.from_url(REDIS_URL, prefix=redis_prefix)
    champions = registry.champions("recommend", ["click", "purchase"])
    registry.close()
    promoted = {run.outcome for run in result.runs if run.promoted}
    assert promoted == {"click", "purchase"}, [(r.outcome, r.version, r.reason) for r in result.runs]
    assert served == champions  # the engine serves what the registry names champion
    served_sets = {tuple(sorted(r.versions.items())) for r in result.rounds if r.versions}
    assert len(served_sets) >= 2  # hot-swapped to models, then to newer ones
    assert result.rounds[-1].model_share == 1.0
    assert result.rounds[0].model_share == 0.0

    assert counters["decisions"] == 4000
    assert counters["feedback_joined"] == by_source["feedback"]  # every joined report is one label
    assert counters["defaults_applied"] == by_source["default"]
    assert per_pair == 1
    assert result.evaluation["lift_over_default"]["low"] > 0
