"""The event codec on the hot path: encoding a decision event, and the readers' decodes.

Measured against the floors a hand-written codec would have: ``orjson.dumps`` of the same event
built as a dict literal (what the engine did before the codec) and ``orjson.loads`` of it.

.venv/bin/python bench/event_codec.py [--events 20000]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from datetime import UTC, datetime

import numpy as np
import orjson
from _setup import CANDIDATE, CONTEXT

from closedloop.contracts import (
    DecisionEvent,
    LoggedCandidate,
    decision_header_decoder,
    decode_decision,
    decode_decision_header,
    decode_training_decision,
    encode_decision,
)


def _parts(rng: np.random.Generator, candidates: int = 20) -> dict[str, object]:
    return {
        "context": {name: float(v) for name, v in zip(CONTEXT, rng.normal(size=len(CONTEXT)), strict=True)},
        "candidates": [
            (
                f"item-{j}",
                {n: float(v) for n, v in zip(CANDIDATE, rng.normal(size=20), strict=True)},
                rng.random(),
            )
            for j in range(candidates)
        ],
    }


def _codec_event(parts: dict[str, object], stamp: datetime) -> bytes:
    candidates = parts["candidates"]
    assert isinstance(candidates, list)
    event = DecisionEvent(
        event_id="0" * 32,
        use_case="bench",
        unit_id="user-1",
        timestamp=stamp,
        decision_type="rank",
        context=parts["context"],  # type: ignore[arg-type]
        candidates=[
            LoggedCandidate(id=cid, features=f, predictions={"click": p}, value=p) for cid, f, p in candidates
        ],
        choice="item-0",
        ranking=[c[0] for c in candidates],
        propensity=0.9,
        exploration={"strategy": "epsilon_greedy", "epsilon": 0.1},
        model_versions={"click": "v1"},
        policy="model",
    )
    return encode_decision(event)


def _dict_event(parts: dict[str, object], stamp: datetime) -> bytes:
    candidates = parts["candidates"]
    assert isinstance(candidates, list)
    event = {
        "event_id": "0" * 32,
        "use_case": "bench",
        "unit_id": "user-1",
        "timestamp": stamp,
        "decision_type": "rank",
        "context": parts["context"],
        "candidates": [
            {"id": cid, "features": f, "predictions": {"click": p}, "value": p} for cid, f, p in candidates
        ],
        "choice": "item-0",
        "ranking": [c[0] for c in candidates],
        "propensity": 0.9,
        "exploration": {"strategy": "epsilon_greedy", "epsilon": 0.1},
        "model_versions": {"click": "v1"},
        "policy": "model",
        "experiment": None,
        "arm": None,
        "experiment_phase": None,
        "schema_version": 1,
    }
    return orjson.dumps(event)


def _microseconds(call: Callable[[int], object], count: int) -> float:
    """Best of five passes, in microseconds per call (the machine is shared: the best is the cost)."""
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for i in range(count):
            call(i)
        best = min(best, (time.perf_counter() - started) / count * 1e6)
    return best


def _training_view(record: bytes) -> object:
    """What the trainer's join decodes of a decision: the view, then its choice's features."""
    event = decode_training_decision(record)
    return event.shown_features(event.choice)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    parts = [_parts(rng) for _ in range(200)]
    stamp = datetime.now(UTC)
    records = [_codec_event(p, stamp) for p in parts]
    n = args.events
    kept = decision_header_decoder(tuple(CONTEXT[:3]))  # what a report with 3 breakdowns reads
    rows = {
        "encode: codec (build DecisionEvent + encode_decision)": _microseconds(
            lambda i: _codec_event(parts[i % 200], stamp), n
        ),
        "encode floor: orjson.dumps of a dict literal": _microseconds(
            lambda i: _dict_event(parts[i % 200], stamp), n
        ),
        "decode: decode_decision (typed, validated)": _microseconds(
            lambda i: decode_decision(records[i % 200]), n
        ),
        "decode: decode_decision_header (no candidates)": _microseconds(
            lambda i: decode_decision_header(records[i % 200]), n
        ),
        "decode: decision_header_decoder (3 context features kept)": _microseconds(
            lambda i: kept(records[i % 200]), n
        ),
        "decode: decode_training_decision + the chosen features": _microseconds(
            lambda i: _training_view(records[i % 200]), n
        ),
        "decode floor: orjson.loads (untyped dicts)": _microseconds(
            lambda i: orjson.loads(records[i % 200]), n
        ),
    }
    print(f"machine: {platform.processor() or platform.machine()}, {platform.python_version()}")
    print(f"events: {n} x 5 passes, 20 candidates x 30 features, {len(records[0]):,} bytes each")
    for name, micros in rows.items():
        print(f"{name:<56} {micros:7.1f} us")
    encode, encode_floor = (
        rows["encode: codec (build DecisionEvent + encode_decision)"],
        rows["encode floor: orjson.dumps of a dict literal"],
    )
    decode, loads = (
        rows["decode: decode_decision (typed, validated)"],
        rows["decode floor: orjson.loads (untyped dicts)"],
    )
    header = rows["decode: decode_decision_header (no candidates)"]
    kept_header = rows["decode: decision_header_decoder (3 context features kept)"]
    training = rows["decode: decode_training_decision + the chosen features"]
    print(f"ratio encode / floor: {encode / encode_floor:.2f}x")
    print(f"ratio decode / orjson.loads: {decode / loads:.2f}x; header / orjson.loads: {header / loads:.2f}x")
    print(f"ratio training view / decode_decision: {training / decode:.2f}x")
    print(f"ratio header keeping 3 context features / whole header: {kept_header / header:.2f}x")


if __name__ == "__main__":
    main()
