"""In-process decide latency (20 candidates, 30 features, 100-tree model) against its floor and a
bare LightGBM predict.

The floor (issue #16, point 2) is what any in-process decide must do: build the rows from the same
request dicts, predict with the same model, and encode the event that logs the decision (the
project's codec), predicting on one thread as the engine and the floor server do (for tens of
rows, a second OpenMP thread halves the predict's latency alone but costs more CPU than it saves
under concurrent load; the two-thread predict is printed too); ``decide`` adds validation, exploration, the experiment arm, the value function,
writing the event and the decision index. Target: decide <= 1.5x the floor at p50.

.venv/bin/python bench/decide_inprocess.py [--decisions 20000]
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import numpy as np
from _setup import CANDIDATE, CONTEXT, bench_config, percentile_ms, publish, request_body, train_click_model

from closedloop.contracts import DecideRequest, DecisionEvent, LoggedCandidate, encode_decision
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
        bodies = [request_body(rng) for _ in range(500)]
        requests = [DecideRequest.model_validate(body) for body in bodies]
        rows = FeatureEncoder(
            config.use_cases["bench"]
        ).encode(  # the rows the engine scores
            requests[0].context, [c.features for c in requests[0].candidates]
        )[:, : len(CONTEXT) + len(CANDIDATE)]  # without the slot column, which a model of 30 lacks
        for request in requests[:200]:  # warm-up
            engine.decide(request)
        decide, floor, bare, bare_one_thread = _time_interleaved(
            [
                lambda i: engine.decide(requests[i % len(requests)]),
                lambda i: _floor(booster, bodies[i % len(bodies)]),
                lambda i: booster.predict(rows),
                lambda i: booster.predict(rows, num_threads=1),
            ],
            args.decisions,
        )
        engine.close()
    print(f"machine: {platform.processor() or platform.machine()}, {platform.python_version()}")
    print(
        f"decisions: {args.decisions}, 20 candidates x 30 features, 100 trees, epsilon-greedy, file event log"
    )
    for name, samples in (
        ("decide (in-process)", decide),
        ("floor: rows+predict+event", floor),
        ("bare predict, 2 threads", bare),
        ("bare predict, 1 thread", bare_one_thread),
    ):
        print(f"{name:<24} p50 {percentile_ms(samples, 50):.3f} ms   p99 {percentile_ms(samples, 99):.3f} ms")
    print(
        f"ratio decide/floor: p50 {np.median(decide) / np.median(floor):.2f}x, "
        f"p99 {np.percentile(decide, 99) / np.percentile(floor, 99):.2f}x (target <= 1.5x at p50)"
    )
    print(
        f"ratio decide/bare predict (1 thread): p50 {np.median(decide) / np.median(bare_one_thread):.2f}x, "
        f"p99 {np.percentile(decide, 99) / np.percentile(bare_one_thread, 99):.2f}x"
    )


def _floor(booster: object, body: dict[str, Any]) -> bytes:
    """Rows from the request's dicts, the model's scores, the logged event encoded: nothing else."""
    context, candidates = body["context"], body["candidates"]
    rows = np.empty((len(candidates), len(CONTEXT) + len(CANDIDATE)))
    rows[:, : len(CONTEXT)] = [context[name] for name in CONTEXT]
    for i, candidate in enumerate(candidates):
        rows[i, len(CONTEXT) :] = [candidate["features"][name] for name in CANDIDATE]
    scores = booster.predict(rows, num_threads=1)  # type: ignore[attr-defined]
    order = np.argsort(-scores)
    ranking = [candidates[int(k)]["id"] for k in order]
    event = DecisionEvent(
        event_id=uuid.uuid4().hex,
        use_case="bench",
        unit_id=body["unit_id"],
        timestamp=datetime.now(UTC),
        decision_type="rank",
        context=context,
        candidates=[
            LoggedCandidate(
                id=c["id"], features=c["features"], predictions={"click": float(s)}, value=float(s)
            )
            for c, s in zip(candidates, scores, strict=True)
        ],
        choice=ranking[0],
        ranking=ranking,
        propensity=1.0,
        exploration={},
        model_versions={},
        policy="model",
    )
    return encode_decision(event)


def _time_interleaved(calls: list[Any], count: int) -> list[list[float]]:
    """Each call's latencies, the calls taken in turn so that all of them meet the same noise
    (another process, a slower minute of the VM) and their ratio holds within one run."""
    samples: list[list[float]] = [[] for _ in calls]
    for i in range(count):
        for call, kept in zip(calls, samples, strict=True):
            started = time.perf_counter()
            call(i)
            kept.append(time.perf_counter() - started)
    return samples


if __name__ == "__main__":
    main()
