"""In-process decide latency (20 candidates, 30 features, 100-tree model) vs a bare LightGBM predict.

.venv/bin/python bench/decide_inprocess.py [--decisions 20000]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time

import numpy as np
from _setup import bench_config, percentile_ms, publish, request_body, train_click_model

from closedloop.contracts import DecideRequest
from closedloop.decision_service import open_engine
from closedloop.policy import FeatureEncoder
from closedloop.registry import open_registry


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data:
        config = bench_config(data_dir=data)
        booster = train_click_model()
        publish(open_registry(config.infrastructure), booster)
        engine = open_engine(config, seed=0)
        rng = np.random.default_rng(0)
        requests = [DecideRequest.model_validate(request_body(rng)) for _ in range(500)]
        rows = FeatureEncoder(config.use_cases["bench"]).encode(  # the rows the engine scores
            requests[0].context, [c.features for c in requests[0].candidates]
        )
        for request in requests[:200]:  # warm-up
            engine.decide(request)
        decide = _time(lambda i: engine.decide(requests[i % len(requests)]), args.decisions)
        bare = _time(lambda i: booster.predict(rows), args.decisions)
        bare_one_thread = _time(lambda i: booster.predict(rows, num_threads=1), args.decisions)
        engine.close()
    print(f"machine: {platform.processor() or platform.machine()}, {platform.python_version()}")
    print(
        f"decisions: {args.decisions}, 20 candidates x 30 features, 100 trees, epsilon-greedy, file event log"
    )
    for name, samples in (
        ("decide (in-process)", decide),
        ("bare lightgbm predict", bare),
        ("bare predict, 1 thread", bare_one_thread),
    ):
        print(f"{name:<24} p50 {percentile_ms(samples, 50):.3f} ms   p99 {percentile_ms(samples, 99):.3f} ms")
    print(
        f"ratio decide/bare predict: p50 {np.median(decide) / np.median(bare):.2f}x, "
        f"p99 {np.percentile(decide, 99) / np.percentile(bare, 99):.2f}x"
    )


def _time(call: object, count: int) -> list[float]:
    samples = []
    for i in range(count):
        started = time.perf_counter()
        call(i)  # type: ignore[operator]
        samples.append(time.perf_counter() - started)
    return samples


if __name__ == "__main__":
    main()
