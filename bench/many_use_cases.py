"""1,000 use cases, one model each, in one decision process (issue #16, point 5): start-up time,
resident memory, the cost of one model swap, and decide latency of one use case against a
process that serves only that use case. Looper hosts 440-1,000 models per service.

Each use case decides among 10 candidates on 10 context and 10 candidate features with its own
50-tree model (trained on its own data), on real Redis (registry and decision index) and the
file event log. Both processes are started the same way, one after the other, twice, and the
median is reported.

    .venv/bin/python bench/many_use_cases.py [--use-cases 1000] [--decisions 5000]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import lightgbm as lgb
import numpy as np
from _setup import use_case_lines
from rich.progress import track

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import REDIS_URL

from closedloop.contracts import ClosedLoopConfig, DecideRequest
from closedloop.registry import RedisModelRegistry

CONTEXT = [f"u{i}" for i in range(10)]
CANDIDATE = [f"i{i}" for i in range(10)]
CANDIDATES = 10


def config_text(names: list[str], *, prefix: str, data_dir: str) -> str:
    """The file as a team would write it: each use case's declaration, defaults left out."""
    lines = [
        "infrastructure:",
        f"  redis_url: {REDIS_URL}",
        f"  key_prefix: {prefix}",
        f"  data_dir: {data_dir}",
    ]
    lines += ["use_cases:"]
    for name in names:
        lines += use_case_lines(
            name,
            decision="choose",
            context=CONTEXT,
            candidate=CANDIDATE,
            epsilon=0.05,
            model="{interactions: none}",
        )
    return "\n".join(lines) + "\n"


def train(seed: int) -> str:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(1500, len(CONTEXT) + len(CANDIDATE)))
    weights = rng.normal(size=x.shape[1])
    y = (rng.random(len(x)) < 1 / (1 + np.exp(-(x @ weights) / 3))).astype(float)
    params = {"objective": "binary", "num_leaves": 15, "verbose": -1, "seed": seed, "num_threads": 1}
    data = lgb.Dataset(x, y, feature_name=CONTEXT + CANDIDATE)
    return str(lgb.train(params, data, num_boost_round=50).model_to_string())


def request(rng: np.random.Generator, use_case: str) -> dict[str, object]:
    return {
        "use_case": use_case,
        "unit_id": f"user-{int(rng.integers(1_000_000))}",
        "context": dict(zip(CONTEXT, rng.normal(size=len(CONTEXT)).tolist(), strict=True)),
        "candidates": [
            {
                "id": f"item-{j}",
                "features": dict(zip(CANDIDATE, rng.normal(size=len(CANDIDATE)).tolist(), strict=True)),
            }
            for j in range(CANDIDATES)
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--use-cases", type=int, default=1000)
    parser.add_argument("--decisions", type=int, default=5000)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(Path(args.child), args.decisions)))
        return
    prefix = f"bench-many-{uuid.uuid4().hex[:8]}"
    names = [f"uc{i:04d}" for i in range(args.use_cases)]
    registry = RedisModelRegistry.from_url(REDIS_URL, prefix=prefix)
    try:
        for i, name in enumerate(track(names, description=f"training {len(names)} models")):
            registry.publish(name, "click", train(i), {}, champion=True)
        results: dict[str, list[dict[str, float]]] = {"all": [], "one": []}
        with tempfile.TemporaryDirectory() as data:
            for label, served in (("all", names), ("one", names[:1])) * 2:
                path = Path(data) / f"{label}.yaml"
                path.write_text(config_text(served, prefix=prefix, data_dir=str(Path(data) / label)))
                child = [sys.executable, __file__, "--child", str(path), "--decisions", str(args.decisions)]
                output = subprocess.run(child, check=True, capture_output=True, text=True).stdout
                results[label].append(json.loads(output.strip().splitlines()[-1]))
        report(results, len(names), args.decisions)
    finally:
        keys = list(registry._redis.scan_iter(match=f"{prefix}:*", count=1000))
        for start in range(0, len(keys), 1000):
            registry._redis.delete(*keys[start : start + 1000])


def measure(path: Path, decisions: int) -> dict[str, float]:
    """In the child: open the engine, then time decisions of the first use case."""
    from closedloop.contracts import load_config
    from closedloop.decision_service import open_engine

    before = _rss_mib()
    started = time.perf_counter()
    config: ClosedLoopConfig = load_config(path)
    engine = open_engine(config, seed=0)
    start_up = time.perf_counter() - started
    loaded = _rss_mib()
    first = next(iter(config.use_cases))
    rng = np.random.default_rng(0)
    requests = [DecideRequest.model_validate(request(rng, first)) for _ in range(500)]
    for r in requests[:200]:
        engine.decide(r)
    latencies = []
    for i in range(decisions):
        began = time.perf_counter()
        engine.decide(requests[i % len(requests)])
        latencies.append(time.perf_counter() - began)
    registry = RedisModelRegistry.from_url(
        str(config.infrastructure.redis_url), prefix=config.infrastructure.key_prefix
    )
    registry.publish(first, "click", train(10_000), {}, champion=True)
    began = time.perf_counter()
    swapped = engine.refresh_models()
    swap = time.perf_counter() - began
    assert swapped, "the new champion was not picked up"
    engine.close()
    return {
        "start_up_s": start_up,
        "rss_mib": loaded,
        "rss_models_mib": loaded - before,
        "swap_s": swap,
        "p50_ms": float(np.percentile(latencies, 50) * 1000),
        "p99_ms": float(np.percentile(latencies, 99) * 1000),
    }


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def report(results: dict[str, list[dict[str, float]]], count: int, decisions: int) -> None:
    def median(label: str, key: str) -> float:
        return float(np.median([r[key] for r in results[label]]))

    print(f"machine: {platform.processor() or platform.machine()}, {platform.python_version()}")
    print(f"{count} use cases x 1 model (50 trees, 20 features), {decisions} decisions of one use case")
    print(
        f"{'':<26}{'1,000 use cases' if count == 1000 else f'{count} use cases':>18}{'1 use case':>14}{'ratio':>9}"
    )
    for key, label, unit in (
        ("start_up_s", "start-up (config + models)", "s"),
        ("rss_mib", "resident memory", "MiB"),
        ("rss_models_mib", "  of it config + models", "MiB"),
        ("swap_s", "one model swapped", "s"),
        ("p50_ms", "decide p50", "ms"),
        ("p99_ms", "decide p99", "ms"),
    ):
        many, one = median("all", key), median("one", key)
        print(f"{label:<26}{many:>14.3f} {unit:<3}{one:>10.3f} {unit:<3}{many / one:>8.2f}x")


if __name__ == "__main__":
    main()
