"""Experiment reports served by the console, and analysis read from Kafka and Redis."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from conftest import REDIS_URL, Broker, Server
from test_evaluation_experiment import T0, offer_config, run_experiment

from closedloop.console import create_console
from closedloop.evaluation import analyze_experiment


def test_the_console_lists_experiments_and_serves_their_reports(
    tmp_path: Path, serve: Callable[[object], Server]
) -> None:
    config = offer_config(tmp_path)
    run_experiment(config, units=400, decisions_per_unit=2)
    server = serve(create_console(config))
    with httpx.Client(base_url=server.url, timeout=60) as http:
        listing = http.get("/v1/experiments", params={"format": "json"}).json()
        assert listing["by_quality"]["use_case"] == "offer"
        assert [p["phase"] for p in listing["by_quality"]["phases"]] == [1]
        page = http.get("/v1/experiments")
        assert "/v1/experiments/by_quality/report" in page.text
        assert "running" in page.text

        served = http.get("/v1/experiments/by_quality/report", params={"format": "json"}).json()
        assert sum(arm["decisions"] for arm in served["arms"]) == 800
        html = http.get("/v1/experiments/by_quality/report")
        assert html.headers["content-type"].startswith("text/html")
        assert "Off-policy evaluation" in html.text

        table = http.get("/v1/experiments/by_quality/report", params={"format": "csv"})
        assert table.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(table.text)))
        buy = next(m for m in served["metrics"] if m["name"] == "buy")
        for arm in buy["arms"]:
            row = next(r for r in rows if r["metric"] == "buy" and r["arm"] == arm["arm"])
            assert int(row["units"]) == arm["units"]
            assert float(row["mean"]) == pytest.approx(arm["mean"])
            assert float(row["mean_low"]) == pytest.approx(arm["low"])
        treated = next(r for r in rows if r["metric"] == "buy" and r["arm"] == "model")
        assert float(treated["mde_relative"]) == pytest.approx(buy["comparisons"][0]["mde_relative"])

        missing = http.get("/v1/experiments/nope/report")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "unknown_experiment"
        assert "by_quality" in missing.json()["error"]["message"]


def test_an_experiment_not_started_is_a_409_with_the_command_to_start_it(
    tmp_path: Path, serve: Callable[[object], Server]
) -> None:
    config = offer_config(tmp_path)
    server = serve(create_console(config))
    response = httpx.get(f"{server.url}/v1/experiments/by_quality/report", timeout=30)
    assert response.status_code == 409
    assert "closedloop experiments start by_quality" in response.json()["error"]["hint"]


@pytest.mark.integration
def test_analysis_reads_the_experiment_from_kafka_and_redis(
    tmp_path: Path, redis_prefix: str, broker: Broker
) -> None:
    config = offer_config(
        tmp_path,
    ).model_copy()
    infrastructure = config.infrastructure.model_copy(
        update={
            "redis_url": REDIS_URL,
            "kafka_bootstrap": broker.bootstrap,
            "key_prefix": redis_prefix,
            "topic_prefix": redis_prefix,
        }
    )
    config = config.model_copy(update={"infrastructure": infrastructure})
    run_experiment(config, units=500, decisions_per_unit=2)
    report = analyze_experiment(config, "by_quality", as_of=(T0 + timedelta(days=2)).timestamp())
    assert sum(arm.decisions for arm in report.arms) == 1000
    assert sum(arm.units for arm in report.arms) == 500
    buy = next(m for m in report.metrics if m.name == "buy")
    assert all(arm.mean is not None and 0.1 < arm.mean < 0.35 for arm in buy.arms)
    assert report.ope is not None
    assert report.ope.sample == 1000
