"""What access control costs a decision, and what report computation costs decide latency.

1. CPU per decision of ``closedloop serve`` (one process, Redis, 20 candidates x 30 features)
   without API keys, and with a key checked and a rate limit counted on every request (a limit
   far above the load, so nothing is refused: the checking is what is measured). The two run
   alternately, ``--rounds`` times each, in this run; the ratio on/off is printed.
2. Decide latency at a fixed rate while experiment reports are computed: quiet; while the
   console (its own process, where reports are served now) recomputes reports for four callers;
   and, for comparison, while the same reports are computed inside the decision process (how
   it was before: the report router mounted in the service app).

    .venv/bin/python bench/access_cost.py [--seconds 8] [--rounds 2] [--rate 300] [--report-decisions 200000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from _cpu import paired_cpu_per_decision
from _setup import percentile_ms, publish, request_body, train_click_model, use_case_lines
from experiment_report import CONFIG as SHOP_CONFIG
from experiment_report import T0, champion, write_events
from http_service import paced_load

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import REDIS_URL, Broker, free_port, wait_for_port

from closedloop.access import create_key, open_key_store
from closedloop.contracts import parse_config
from closedloop.registry import LocalModelRegistry, RedisModelRegistry, start_experiment

JSON = {"content-type": "application/json"}
# The service before this change: reports computed in the decision process.
IN_PROCESS = """
import sys, uvicorn
from closedloop.contracts import load_config
from closedloop.decision_service import create_app
from closedloop.evaluation import report_router
app = create_app(load_config(sys.argv[1]))
app.include_router(report_router(load_config(sys.argv[2])))
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[3]), log_level="warning", http="httptools", loop="uvloop")
"""


def config_text(data: str, prefix: str, limit: float | None, kafka: str | None = None) -> str:
    lines = ["use_cases:", *use_case_lines("bench")]
    text = "\n".join(lines) + SHOP_CONFIG.split("use_cases:", 1)[1]
    text += f"\ninfrastructure:\n  data_dir: {data}\n  redis_url: {REDIS_URL}\n  key_prefix: {prefix}\n"
    if kafka is not None:
        text += f"  kafka_bootstrap: {kafka}\n  topic_prefix: {prefix}\n"
    if limit is not None:
        text += f"access:\n  rate_limit: {{per_second: {limit}, burst: {int(limit)}}}\n"
    return text


@contextmanager
def running(command: list[str], port: int) -> Iterator[int]:
    process = subprocess.Popen(
        command, env={**os.environ, "PYTHONWARNINGS": "ignore"}, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port, timeout=60)
        yield process.pid
    finally:
        process.terminate()
        process.wait(timeout=30)


def serve(path: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "closedloop.cli", "serve", "-c", str(path), "--port", str(port)]


def paced_p99(
    url: str, bodies: list[bytes], headers: dict[str, str], rate: float, seconds: float
) -> tuple[float, float, int]:
    """(p50 ms, p99 ms, errors) of decisions at ``rate`` per second."""
    with httpx.Client(base_url=url, timeout=5, headers={**JSON, **headers}) as http:
        for body in bodies[:300]:  # warm up, as bench/http_service.py does
            http.post("/v1/decide", content=body).raise_for_status()
    latencies, errors = paced_load(url, bodies, rate=rate, seconds=seconds, headers=headers)
    return percentile_ms(latencies, 50), percentile_ms(latencies, 99), errors


def describe(measured: list[tuple[float, float, int]]) -> str:
    p50 = float(np.median([m[0] for m in measured]))
    p99s = [m[1] for m in measured]
    errors = sum(m[2] for m in measured)
    return (
        f"p50 {p50:7.2f} ms, p99 {float(np.median(p99s)):8.2f} ms (median of {len(measured)}; "
        f"p99s {', '.join(f'{p:.1f}' for p in p99s)}; {errors} errors)"
    )


def _ask_for_reports(url: str, headers: dict[str, str], done: Any, asking: Any, stop: Any) -> None:
    with httpx.Client(base_url=url, timeout=300, headers=headers) as http:
        while not stop.is_set():
            if not asking.wait(0.1):
                continue
            params = {"format": "json", "fresh": "true"}
            http.get("/v1/experiments/big/report", params=params).raise_for_status()
            with done.get_lock():
                done.value += 1


class ReportCallers:
    """Processes asking for a fresh report of experiment big, over and over, while `asking`.
    Processes, not threads: reading a report's JSON in this process would hold the GIL the load
    generator needs, and its stalls would be counted as the service's latency. Started once
    (a process's start-up is seconds of CPU), then switched on and off."""

    def __init__(self, url: str, headers: dict[str, str], callers: int = 4) -> None:
        context = multiprocessing.get_context("spawn")
        self.done, self._asking, self._stop = context.Value("i", 0), context.Event(), context.Event()
        arguments = (url, headers, self.done, self._asking, self._stop)
        self._workers = [context.Process(target=_ask_for_reports, args=arguments) for _ in range(callers)]
        for worker in self._workers:
            worker.start()
        time.sleep(10.0)  # their imports done before anything is measured

    @contextmanager
    def asking(self) -> Iterator[None]:
        self._asking.set()
        time.sleep(2.0)  # the first computations under way
        try:
            yield
        finally:
            self._asking.clear()
            time.sleep(1.0)

    def close(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=300)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=float, default=300)
    parser.add_argument("--report-decisions", type=int, default=200_000)
    args = parser.parse_args()
    # Two key prefixes: keys made under one do not exist under the other (no keys: open).
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    registry = RedisModelRegistry.from_url(REDIS_URL, prefix=prefix)
    open_registry = RedisModelRegistry.from_url(REDIS_URL, prefix=f"{prefix}-open")
    rng = np.random.default_rng(0)
    bodies = [json.dumps(request_body(rng)).encode() for _ in range(1000)]
    broker = Broker()
    broker.start()
    # The service logs to Kafka through its outbox (as deployed); the reports read the
    # experiment's decisions from event files written here (the console's configuration).
    with tempfile.TemporaryDirectory() as data, tempfile.TemporaryDirectory() as outbox:
        open_path, limited_path = Path(data) / "open.yaml", Path(data) / "limited.yaml"
        open_path.write_text(config_text(outbox, f"{prefix}-open", None, broker.bootstrap))
        limited_path.write_text(config_text(outbox, prefix, 1e6, broker.bootstrap))
        reports_path = Path(data) / "reports.yaml"
        reports_path.write_text(config_text(data, prefix, 1e6))
        config = parse_config(open_path.read_text(), environ={})
        model = train_click_model()
        publish(registry, model)
        publish(open_registry, model)
        champion_into(registry, Path(data))
        champion_into(open_registry, Path(data))
        start_experiment(
            registry, "shop", "big", config.use_cases["shop"].experiments["big"], now=T0.timestamp()
        )
        write_events(Path(data), args.report_decisions, units=50_000)
        try:
            costs = measure_access_cost(open_path, limited_path, bodies, args)
            measure_report_isolation(limited_path, reports_path, bodies, costs, args)
        finally:
            broker.stop()
            keys = list(registry._redis.scan_iter(match=f"{prefix}*", count=1000))
            for start in range(0, len(keys), 1000):
                registry._redis.delete(*keys[start : start + 1000])


def champion_into(registry: RedisModelRegistry, folder: Path) -> None:
    local = LocalModelRegistry(folder / "shop-model")
    if not local.versions("shop", "buy"):
        champion(local)
    version = local.versions("shop", "buy")[0]
    registry.publish("shop", "buy", local.model_text("shop", "buy", version.version), {}, champion=True)


def measure_access_cost(
    open_path: Path, limited_path: Path, bodies: list[bytes], args: argparse.Namespace
) -> dict[str, str]:
    store = open_key_store(parse_config(limited_path.read_text(), environ={}).infrastructure)
    tokens = {
        "decide": create_key(store, "bench", ["decide"]).token,
        "read": create_key(store, "reader", ["read"]).token,
    }
    store.close()
    auth = {"Authorization": f"Bearer {tokens['decide']}"}
    ratios = []
    open_port, limited_port = free_port(), free_port()
    with (
        running(serve(open_path, open_port), open_port) as off,
        running(serve(limited_path, limited_port), limited_port) as on,
    ):
        targets = [(f"http://127.0.0.1:{open_port}", off, {}), (f"http://127.0.0.1:{limited_port}", on, auth)]
        for _ in range(args.rounds):
            without, with_keys = paired_cpu_per_decision(targets, bodies, args.seconds)
            ratios.append(with_keys / without)
            print(
                f"  round: keys off {without:.3f} ms CPU per decision, keys + rate limit on {with_keys:.3f} ms"
            )
    ratio = float(np.median(ratios))
    print(
        f"CPU per decision with a key checked and a rate limit counted, over none: median of {args.rounds} "
        f"rounds {ratio:.3f}x ({(ratio - 1) * 100:+.1f}%; rounds {', '.join(f'{r:.3f}' for r in ratios)})"
    )
    return tokens


def measure_report_isolation(
    path: Path, reports: Path, bodies: list[bytes], tokens: dict[str, str], args: argparse.Namespace
) -> None:
    decide = {"Authorization": f"Bearer {tokens['decide']}"}
    read = {"Authorization": f"Bearer {tokens['read']}"}
    # An outbox of its own: the cost measurement's services left a backlog in theirs, which a
    # service on the same data_dir would ship while it is measured.
    fresh = Path(tempfile.mkdtemp())
    config = parse_config(path.read_text(), environ={})
    text = path.read_text().replace(f"data_dir: {config.infrastructure.data_dir}", f"data_dir: {fresh}")
    path = fresh / "service.yaml"
    path.write_text(text)
    port, console_port = free_port(), free_port()
    console = [
        sys.executable,
        "-m",
        "closedloop.cli",
        "console",
        "-c",
        str(path),
        "--port",
        str(console_port),
    ]
    quiet: list[tuple[float, float, int]] = []
    busy: list[tuple[float, float, int]] = []
    with running(serve(path, port), port), running(console, console_port):
        url = f"http://127.0.0.1:{port}"
        callers = ReportCallers(f"http://127.0.0.1:{console_port}", read)
        for _ in range(args.rounds):  # alternated, so that drift in the machine hits both alike
            quiet.append(paced_p99(url, bodies, decide, args.rate, args.seconds))
            with callers.asking():
                busy.append(paced_p99(url, bodies, decide, args.rate, args.seconds))
        callers.close()
    print(f"decide at {args.rate:.0f}/s, quiet:                         {describe(quiet)}")
    print(f"while the console computes reports ({callers.done.value} done): {describe(busy)}")
    port = free_port()
    with running([sys.executable, "-c", IN_PROCESS, str(path), str(reports), str(port)], port):
        url = f"http://127.0.0.1:{port}"
        callers = ReportCallers(url, read)
        before_quiet = [paced_p99(url, bodies, decide, args.rate, args.seconds)]
        with callers.asking():
            before_busy = [paced_p99(url, bodies, decide, args.rate, args.seconds)]
        callers.close()
    print(f"before (reports in the decision process), quiet:  {describe(before_quiet)}")
    print(f"before, computing reports itself ({callers.done.value} done):  {describe(before_busy)}")


if __name__ == "__main__":
    main()
