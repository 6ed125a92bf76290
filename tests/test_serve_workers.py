"""`closedloop serve --workers 2` on Redis and the Tansu broker: both workers serve, feedback is
matched to decisions made by the other worker, every event reaches Kafka exactly once, and a
scrape of /metrics counts every worker's decisions. Without shared stores it is refused."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import yaml
from conftest import REDIS_URL, Broker, consume_all, free_port, make_config, wait_for_port
from typer.testing import CliRunner

from closedloop.cli import app
from closedloop.contracts import Topics, decode_decision, decode_feedback

DECISIONS = 240


def _metric(text: str, name: str, labels: str = "") -> float:
    pattern = rf"^{name}{re.escape(labels)} (\S+)$" if labels else rf"^{name}(?:{{[^}}]*}})? (\S+)$"
    return sum(float(v) for v in re.findall(pattern, text, re.M))


def test_two_workers_share_the_decision_index_the_log_and_the_metrics(
    tmp_path: Path, redis_prefix: str, broker: Broker
) -> None:
    config = make_config(
        tmp_path,
        redis_url=REDIS_URL,
        kafka_bootstrap=broker.bootstrap,
        key_prefix=redis_prefix,
        topic_prefix=redis_prefix,
    )
    path = tmp_path / "closedloop.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOSEDLOOP_")}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "closedloop.cli",
            "serve",
            "-c",
            str(path),
            "--port",
            str(port),
            "--workers",
            "2",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=60)
        url = f"http://127.0.0.1:{port}"

        def decide_and_report(worker: int) -> list[str]:
            ids = []
            # a connection per request: the kernel spreads new connections over both workers
            for i in range(worker, DECISIONS, 8):
                body = {"use_case": "pick", "unit_id": f"u{i}", "candidates": [{"id": "a"}, {"id": "b"}]}
                decision = httpx.post(f"{url}/v1/decide", json=body, timeout=10).json()
                ids.append(decision["decision_id"])
            for decision_id in ids:
                answer = httpx.post(
                    f"{url}/v1/feedback",
                    json={"decision_id": decision_id, "outcomes": {"click": 1}},
                    timeout=10,
                )
                assert answer.status_code == 202, answer.text  # accepted: known, whichever worker decided
            return ids

        with ThreadPoolExecutor(8) as pool:
            decided = [i for ids in pool.map(decide_and_report, range(8)) for i in ids]
        assert len(set(decided)) == DECISIONS
        outbox = config.infrastructure.data_path / "outbox"
        for slot in (outbox, outbox / "slot-1"):  # each worker logged decisions in its own slot
            assert sum(f.stat().st_size for f in (slot / "segments").glob("*.seg")) > 0

        topics = Topics(config.infrastructure.topic_prefix)
        decisions = consume_all(broker.bootstrap, topics.decisions, expected=DECISIONS)
        feedback = consume_all(broker.bootstrap, topics.feedback, expected=DECISIONS)
        logged = Counter(decode_decision(v).event_id for v in decisions)
        assert logged == Counter(decided)  # every decision, exactly once
        reported = [decode_feedback(v) for v in feedback]
        assert Counter(e.decision_id for e in reported) == Counter(decided)
        assert not any(e.orphan for e in reported)

        scraped = httpx.get(f"{url}/metrics", timeout=10).text
        assert _metric(scraped, "closedloop_decisions_total") == DECISIONS
        assert _metric(scraped, "closedloop_feedback_total", '{status="accepted"}') == DECISIONS
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_several_workers_need_redis_and_kafka(tmp_path: Path) -> None:
    path = tmp_path / "closedloop.yaml"
    path.write_text(yaml.safe_dump(make_config(tmp_path).model_dump(mode="json"), sort_keys=False))
    result = CliRunner().invoke(app, ["serve", "-c", str(path), "--workers", "2"])
    assert result.exit_code != 0
    assert "infrastructure.redis_url" in str(result.exception)
