"""Faults under load: nothing acknowledged is lost, nothing is counted twice.

Product traffic runs through the SDK at a steady rate against a real `closedloop serve` (Redis, a
Tansu Kafka-protocol broker) with a real `closedloop train` beside it, while this script kills,
in turn, the trainer, Redis, the service and the broker (SIGKILL; each restarted after a pause), and
stalls the service (SIGSTOP, then SIGCONT).
Then it counts, by id:

- decisions acknowledged (answered, not a fallback) / in Kafka / active / learned from (the trainer's
  examples); fallbacks, and those the service logged anyway (it answered too late), told abandoned
- reports acknowledged (202 or 404 kept) / in Kafka / joined (the trainer's labels from feedback)
- lost (acknowledged, not in Kafka or not learned from), counted twice, and learned from though no
  one was answered (an abandoned decision the trainer counts): every one must be 0.

The broker keeps its topics in memory, so a restarted broker starts empty: before stopping it the
script waits until everything acknowledged is in Kafka and learned from, and counts Kafka as what
it held before the stop plus what it holds at the end.

    .venv/bin/python bench/faults.py [--rate 40] [--phase-seconds 6]
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import sqlalchemy as sa
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import Broker, PrivateRedis, consume_all, free_port, wait_for_port

from closedloop.contracts import Topics, decode_decision, decode_feedback, load_config
from closedloop.sdk import Client
from closedloop.trainer import open_trainer

CONFIG = {
    "use_cases": {
        "pick": {
            "decision": "choose",
            "candidate": {"price": {"type": "numeric", "default": 1}},
            "outcomes": {"click": {"type": "binary", "window": "10m"}},
            "policy": {"value": "click", "exploration": {"strategy": "epsilon_greedy", "epsilon": 0.2}},
            "retrain": {"min_new_examples": 100000},
        }
    }
}


class Fleet:
    """The service and the trainer as processes of their own, killed and started again."""

    def __init__(self, config_path: Path, logs: Path) -> None:
        self.config_path = config_path
        self.logs = logs
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.service: subprocess.Popen[bytes] | None = None
        self.trainer: subprocess.Popen[bytes] | None = None

    def _start(self, *args: str, name: str) -> subprocess.Popen[bytes]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLOSEDLOOP_")}
        log = (self.logs / f"{name}.log").open("ab")
        command = [sys.executable, "-m", "closedloop.cli", *args, "-c", str(self.config_path)]
        return subprocess.Popen(command, env=env, stdout=log, stderr=log)

    def start_service(self) -> None:
        self.service = self._start("serve", "--port", str(self.port), name="service")
        wait_for_port(self.port, timeout=60)

    def start_trainer(self) -> None:
        self.trainer = self._start("train", "--interval", "1", name="trainer")

    @staticmethod
    def kill(process: subprocess.Popen[bytes] | None) -> None:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=30)


class Traffic:
    """Decisions at a steady rate through the SDK; a click reported for about half of them, each
    report retried until the service takes it (202, or 404: kept as orphan), as careful product
    code would."""

    def __init__(self, url: str, rate: float) -> None:
        self.decider = Client(url, timeout=0.5, retries=2, batch_feedback=False)
        self.reporter = httpx.Client(base_url=url, timeout=1.0)
        self.rate = rate
        self.decisions: list[str] = []
        self.fallbacks = 0
        self.reports: set[str] = set()  # decision ids whose report was acknowledged
        self.refused: Counter[int] = Counter()
        self._pending: list[dict[str, object]] = []
        self._stop = threading.Event()
        self.running = threading.Event()
        self.running.set()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._rng = random.Random(0)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        deadline = time.monotonic() + 120
        while self._pending and time.monotonic() < deadline:
            self._report_pending()
            time.sleep(0.2)
        while not self.decider.flush() and time.monotonic() < deadline:  # the abandoned decides
            time.sleep(0.2)

    def _run(self) -> None:
        step, due, number = 1.0 / self.rate, time.monotonic(), 0
        candidates = {"a": {"price": 1}, "b": {"price": 2}, "c": {"price": 3}}
        while not self._stop.is_set():
            if not self.running.is_set():
                self.running.wait()
                due = time.monotonic()
            number += 1
            decision = self.decider.decide("pick", f"u{number}", candidates=candidates)
            if decision.fallback:
                self.fallbacks += 1
            else:
                self.decisions.append(decision.decision_id)
                if self._rng.random() < 0.5:
                    self._pending.append(
                        {
                            "decision_id": decision.decision_id,
                            "outcomes": {"click": 1},
                            "feedback_id": f"f-{decision.decision_id}",
                            "timestamp": datetime.now(UTC).isoformat(),
                        }
                    )
            self._report_pending()
            due += step
            time.sleep(max(0.0, due - time.monotonic()))

    def _report_pending(self) -> None:
        still = []
        for body in self._pending:
            try:
                status = self.reporter.post("/v1/feedback", json=body).status_code
            except httpx.HTTPError:
                status = 599
            if status in (202, 404):  # taken (404: unknown to an index that restarted empty, kept)
                self.reports.add(str(body["decision_id"]))
            elif status >= 500:
                still.append(body)  # not taken: retried
            else:
                self.refused[status] += 1
        self._pending = still


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--phase-seconds", type=float, default=6.0)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="closedloop-faults-"))
    broker, redis_server = Broker(), PrivateRedis()
    broker.start()
    redis_server.start()
    raw = {
        **CONFIG,
        "infrastructure": {
            "redis_url": redis_server.url,
            "kafka_bootstrap": broker.bootstrap,
            "database_url": f"sqlite:///{directory / 'metadata.db'}",
            "data_dir": str(directory / "data"),
        },
    }
    config_path = directory / "closedloop.yaml"
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    config = load_config(config_path)
    topics = Topics(config.infrastructure.topic_prefix)
    fleet = Fleet(config_path, directory)
    fleet.start_service()
    fleet.start_trainer()
    traffic = Traffic(fleet.url, args.rate)
    traffic.start()
    pause = args.phase_seconds
    kafka_before: dict[str, list[bytes]] = {}

    def phase(name: str, kill: object, restart: object) -> None:
        time.sleep(pause)
        print(f"{time.strftime('%H:%M:%S')} fault: {name}", flush=True)
        kill()  # type: ignore[operator]
        time.sleep(pause / 2)
        restart()  # type: ignore[operator]
        print(f"{time.strftime('%H:%M:%S')} {name} back", flush=True)

    phase("trainer", lambda: Fleet.kill(fleet.trainer), fleet.start_trainer)
    phase("redis", redis_server.stop, redis_server.start)
    phase("service", lambda: Fleet.kill(fleet.service), fleet.start_service)

    def signal_service(number: int) -> None:
        assert fleet.service is not None
        fleet.service.send_signal(number)

    # A stalled service (SIGSTOP, as a long GC pause or a starved host): the SDK times out and falls
    # back, and on SIGCONT the service decides and logs the requests that waited in its socket.
    phase("service stalled", lambda: signal_service(signal.SIGSTOP), lambda: signal_service(signal.SIGCONT))

    def broker_out() -> None:
        # The broker forgets its topics on restart: keep what it holds first (see the docstring),
        # with traffic paused so that nothing reaches it between that count and the stop.
        traffic.running.clear()
        time.sleep(1.0)
        acked = len(traffic.decisions)
        kafka_before["decisions"] = consume_all(
            broker.bootstrap, topics.decisions, expected=acked, timeout=60
        )
        reports = len(traffic.reports)
        kafka_before["feedback"] = consume_all(
            broker.bootstrap, topics.feedback, expected=reports, timeout=60
        )
        broker.stop()

    phase("broker", broker_out, broker.start)
    time.sleep(pause)
    traffic.stop()
    time.sleep(3)  # the outbox ships what waited
    acked_decisions, acked_reports = set(traffic.decisions), set(traffic.reports)
    after_d = consume_all(broker.bootstrap, topics.decisions, expected=10**9, timeout=20)
    after_f = consume_all(broker.bootstrap, topics.feedback, expected=10**9, timeout=20)
    Fleet.kill(fleet.trainer)
    Fleet.kill(fleet.service)

    in_kafka = {decode_decision(r).event_id for r in kafka_before["decisions"] + after_d}
    reported_in_kafka = {decode_feedback(r).decision_id for r in kafka_before["feedback"] + after_f}
    later = (datetime.now(UTC) + timedelta(hours=1)).timestamp()
    trainer = open_trainer(config, clock=lambda: later)
    trainer.run_once(timeout=10)
    examples: Counter[str] = Counter()
    status: dict[str, str] = {}
    with trainer.store.engine.connect() as connection:
        for decision_id, state in connection.execute(sa.text("SELECT decision_id, status FROM cl_examples")):
            examples[decision_id] += 1
            status[decision_id] = state
    active = {d for d, state in status.items() if state == "active"}
    abandoned = {d for d, state in status.items() if state == "abandoned"}
    labels = {r["decision_id"]: r["source"] for r in trainer.store.labels_of("pick")}
    trainer.close()
    joined = {d for d, source in labels.items() if source == "feedback"}
    redis_server.stop()
    broker.stop()
    rows = [
        ("decisions acknowledged", len(acked_decisions)),
        ("  in Kafka", len(acked_decisions & in_kafka)),
        ("  active", len(acked_decisions & active)),
        ("  learned from (trainer examples)", len(acked_decisions & set(examples))),
        ("fallbacks (not acknowledged)", traffic.fallbacks),
        ("  told abandoned by the SDK", traffic.decider.stats().abandoned_told),
        ("  logged by the service all the same: abandoned", len(abandoned)),
        ("reports acknowledged", len(acked_reports)),
        ("  in Kafka", len(acked_reports & reported_in_kafka)),
        ("  joined (labels from feedback)", len(acked_reports & joined)),
        (
            "lost decisions",
            len(acked_decisions - in_kafka)
            + len(acked_decisions - set(examples))
            + len(acked_decisions - active),
        ),
        ("lost reports", len(acked_reports - reported_in_kafka) + len(acked_reports - joined)),
        ("counted twice (examples)", sum(1 for n in examples.values() if n > 1)),
        ("learned from though no one was answered", len(active - acked_decisions)),
    ]
    for name, value in rows:
        print(f"{name:<50} {value:>8}")
    print(f"refused reports: {dict(traffic.refused)}; logs in {directory}")
    failures = sum(value for name, value in rows[-4:])
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
