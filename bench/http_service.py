"""HTTP decide latency at a fixed rate, maximum throughput, CPU per decision against the floor,
and feedback ingestion into Kafka.

The service runs as a separate process (``closedloop serve``) on real Redis and a Tansu
Kafka-protocol broker started here; this process is the load generator. The floor
(`_floor_server.py`: uvicorn + httptools + uvloop, orjson, the same rows and the same model, no
validation, logging or Redis) runs beside it, and both take the same requests in turn, so the ratio
of their CPU per request is measured under the same load and noise (issue #16's target: <= 1.5x).

    .venv/bin/python bench/http_service.py [--rate 500] [--seconds 10] [--workers 1] [--floor-rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import aiohttp
import httpx
import numpy as np
import orjson
import yaml
from _cpu import cpu_seconds, paired_cpu_per_decision
from _setup import bench_config, percentile_ms, publish, request_body, train_click_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import REDIS_URL, Broker, free_port, wait_for_port

from closedloop.registry import RedisModelRegistry

JSON = {"content-type": "application/json"}
SERVE = [sys.executable, "-m", "closedloop.cli", "serve"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=float, default=500)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--feedback", type=int, default=200_000)
    parser.add_argument("--feedback-only", action="store_true", help="only the feedback ingestion stage")
    parser.add_argument("--workers", type=int, default=1, help="closedloop serve --workers")
    parser.add_argument("--floor-rounds", type=int, default=3, help="paired rounds against the floor server")
    args = parser.parse_args()
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    broker = Broker()
    broker.start()
    with tempfile.TemporaryDirectory() as data:
        config = bench_config(
            redis_url=REDIS_URL,
            kafka_bootstrap=broker.bootstrap,
            key_prefix=prefix,
            topic_prefix=prefix,
            data_dir=data,
        )
        path = Path(data) / "closedloop.yaml"
        # key order is feature order: sorted keys would make the model's features a mismatch
        path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
        registry = RedisModelRegistry.from_url(REDIS_URL, prefix=prefix)
        booster = train_click_model()
        publish(registry, booster)
        model_file = Path(data) / "model.txt"
        booster.save_model(str(model_file))
        port = free_port()
        server = subprocess.Popen(
            [*SERVE, "--config", str(path), "--port", str(port), "--workers", str(args.workers)],
            env={**os.environ, "PYTHONWARNINGS": "ignore"},
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for_port(port, timeout=60)
            url = f"http://127.0.0.1:{port}"
            run_benchmarks(url, args, server.pid)
            against_the_floor(url, server.pid, model_file, args)
        finally:
            server.terminate()
            server.wait(timeout=30)
            broker.stop()
            keys = list(registry._redis.scan_iter(match=f"{prefix}:*", count=1000))
            for start in range(0, len(keys), 1000):
                registry._redis.delete(*keys[start : start + 1000])


def run_benchmarks(url: str, args: argparse.Namespace, server_pid: int) -> None:
    rng = np.random.default_rng(0)
    # encoded once here, so the load generator (on the same 2 cores) spends little CPU per request
    bodies = [json.dumps(request_body(rng)).encode() for _ in range(1000)]
    with httpx.Client(base_url=url, timeout=5) as http:
        for body in bodies[:300]:
            answer = http.post("/v1/decide", content=body, headers=JSON).raise_for_status().json()
            if answer["policy"] != "model":  # a refused model: the default policy would be measured
                raise SystemExit(f"the service does not serve the model: {http.get('/v1/models').text}")
    if args.feedback_only:
        ingest_feedback(url, args.feedback)
        return
    latencies, errors = paced_load(url, bodies, rate=args.rate, seconds=args.seconds)
    print(
        f"HTTP decide at {args.rate:.0f}/s for {args.seconds:.0f}s: {len(latencies)} ok, {errors} errors, "
        f"p50 {percentile_ms(latencies, 50):.2f} ms, p99 {percentile_ms(latencies, 99):.2f} ms"
    )
    cpu_before = cpu_seconds(server_pid)
    done, elapsed = closed_loop(url, bodies, workers=8, seconds=args.seconds)
    cpu = cpu_seconds(server_pid) - cpu_before
    print(
        f"HTTP decide max throughput (8 connections): {done / elapsed:.0f} decisions/s; "
        f"service CPU {cpu / done * 1000:.2f} ms per decision, {cpu / elapsed:.2f} cores busy"
    )
    ingest_feedback(url, args.feedback)


def against_the_floor(url: str, pid: int, model_file: Path, args: argparse.Namespace) -> None:
    rng = np.random.default_rng(1)
    bodies = [json.dumps(request_body(rng)).encode() for _ in range(1000)]
    port = free_port()
    floor = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("_floor_server.py")), str(model_file), str(port)],
        cwd=Path(__file__).parent,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=60)
        targets = [(f"http://127.0.0.1:{port}", floor.pid, {}), (url, pid, {})]
        ratios = []
        for _ in range(args.floor_rounds):
            floor_ms, closedloop_ms = paired_cpu_per_decision(targets, bodies, args.seconds)
            ratios.append(closedloop_ms / floor_ms)
            print(
                f"  round: floor {floor_ms:.3f} ms CPU per request, closedloop serve {closedloop_ms:.3f} ms"
            )
        print(
            f"CPU per decision, closedloop serve over the floor server: median of {args.floor_rounds} rounds "
            f"{float(np.median(ratios)):.2f}x (rounds {', '.join(f'{r:.2f}' for r in ratios)}; target <= 1.5x)"
        )
    finally:
        floor.terminate()
        floor.wait(timeout=30)


def paced_load(
    url: str, bodies: list[bytes], *, rate: float, seconds: float, headers: dict[str, str] | None = None
) -> tuple[list[float], int]:
    """Open loop: requests start on schedule whatever the answers' latency (no coordinated omission).

    One asyncio loop with aiohttp's client rather than threads: with threads a request waits for
    the client's own GIL (up to the 5 ms switch interval), and httpx's async pool slows down under
    many concurrent requests; either would be counted as the service's latency."""
    # The generator's own full garbage collection (this process holds numpy, LightGBM, the
    # config...) stalls it for ~80 ms, and that stall would be counted as the service's latency.
    gc.collect()
    gc.freeze()
    try:
        return asyncio.run(
            _paced(url, bodies, rate=rate, seconds=seconds, headers={**JSON, **(headers or {})})
        )
    finally:
        gc.unfreeze()


async def _paced(
    url: str, bodies: list[bytes], *, rate: float, seconds: float, headers: dict[str, str]
) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    total = int(rate * seconds)
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(url, connector=connector, headers=headers) as http:

        async def one(body: bytes, scheduled: float) -> None:
            nonlocal errors
            async with http.post("/v1/decide", data=body) as response:
                await response.read()
                if response.status == 200:
                    latencies.append(time.perf_counter() - scheduled)
                else:
                    errors += 1

        start = time.perf_counter() + 0.1
        tasks = []
        for i in range(total):
            scheduled = start + i / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(bodies[i % len(bodies)], scheduled)))
        await asyncio.gather(*tasks)
    return latencies, errors


def closed_loop(url: str, bodies: list[bytes], *, workers: int, seconds: float) -> tuple[int, float]:
    count = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=5) as http:
            i = 0
            while time.perf_counter() < deadline:
                http.post("/v1/decide", content=bodies[i % len(bodies)], headers=JSON).raise_for_status()
                i += 1
            with lock:
                count[0] += i

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return count[0], time.perf_counter() - started


def ingest_feedback(url: str, total: int, batch: int = 1000) -> None:
    """Feedback in batches of ``batch``, acknowledged, then delivered to Kafka.

    The decision ids are unknown to the service, so every item is kept and logged as an orphan
    (feedback for known decisions would be refused as duplicates after the first report).
    """
    # Encoded before the clock starts, like the decide bodies: the load generator shares the two
    # cores with the service, and its own JSON work is not what is measured.
    bodies = [
        orjson.dumps(
            {
                "items": [
                    {"decision_id": f"unknown-{j}", "outcomes": {"click": 1}, "feedback_id": uuid.uuid4().hex}
                    for j in range(sent, min(sent + batch, total))
                ]
            }
        )
        for sent in range(0, total, batch)
    ]
    with httpx.Client(base_url=url, timeout=30) as http:
        delivered_before = delivered(http)
        started = time.perf_counter()
        for body in bodies:
            response = http.post("/v1/feedback/batch", content=body, headers=JSON)
            response.raise_for_status()
            statuses = {r["status"] for r in orjson.loads(response.content)["results"]}
            assert statuses == {"orphan"}, statuses
        acked = time.perf_counter() - started
        while delivered(http) - delivered_before < total:
            time.sleep(0.05)
        landed = time.perf_counter() - started
    print(
        f"feedback: {total} events in batches of {batch}: acknowledged {total / acked:.0f} events/s, "
        f"all in Kafka after {landed:.1f}s ({total / landed:.0f} events/s end to end)"
    )


def delivered(http: httpx.Client) -> float:
    match = re.search(r"^closedloop_events_delivered_total (\S+)$", http.get("/metrics").text, re.M)
    return float(match.group(1)) if match else 0.0


if __name__ == "__main__":
    main()
