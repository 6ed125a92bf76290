"""What one retrain costs as the stored history grows, with and without the cache of encoded rows.

For each history size, the metadata database (SQLite) is filled with that many final examples of
a 10-feature `choose` use case (written straight into the trainer's tables, as the join would have
left them), the trainer trains once (reading everything), then 1,000 new examples become final and
it retrains: once with its cache (it reads the 1,000 new rows), once as a fresh trainer (it reads
every row, as before the cache). Training itself is fixed at 50 trees so that the read is what
varies; ``--max-rows`` bounds the training window.

    .venv/bin/python bench/retrain_cost.py [--sizes 10000,100000,1000000] [--max-rows 1000000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson
import sqlalchemy as sa

from closedloop.contracts import Topics, parse_config
from closedloop.eventlog import FileEventLog
from closedloop.registry import LocalModelRegistry
from closedloop.trainer import ExampleStore, FileEventSource, Trainer

FEATURES = [f"f{i}" for i in range(10)]
CONFIG = f"""
use_cases:
  bench:
    decision: choose
    context: {{{", ".join(f"{n}: {{type: numeric}}" for n in FEATURES[:5])}}}
    candidate: {{{", ".join(f"{n}: {{type: numeric}}" for n in FEATURES[5:])}}}
    outcomes:
      click: {{type: binary, window: 1m}}
    policy: {{value: click}}
    model: {{num_trees: 50}}
"""
NEW_ROWS = 1000


def fill(store: ExampleStore, first: int, count: int, rng: np.random.Generator) -> float:
    """``count`` final examples decided a second apart from ``first``; returns the last time."""
    x = np.round(rng.normal(size=(count, len(FEATURES))), 4)
    clicked = rng.random(count) < 1 / (1 + np.exp(-(x[:, 0] * x[:, 5] - 1)))
    examples = [
        {
            "decision_id": f"d{first + i}",
            "use_case": "bench",
            "decided_at": float(first + i),
            "features": orjson.dumps(dict(zip(FEATURES, row.tolist(), strict=True))).decode(),
            "choice": "a",
            "propensity": 0.5,
            "policy": "model",
            "arm": None,
            "model_versions": "{}",
            "closed": True,
            "status": "active",
        }
        for i, row in enumerate(x)
    ]
    labels = [
        {
            "decision_id": f"d{first + i}",
            "outcome": "click",
            "use_case": "bench",
            "value": float(c),
            "source": "feedback" if c else "default",
            "feedback_id": None,
            "labelled_at": float(first + i),
        }
        for i, c in enumerate(clicked)
    ]
    metadata = sa.MetaData()
    with store.transaction() as connection:
        for name, rows in (("cl_examples", examples), ("cl_labels", labels)):
            table = sa.Table(name, metadata, autoload_with=connection)
            for start in range(0, len(rows), 50_000):
                connection.execute(sa.insert(table), rows[start : start + 50_000])
        marks = sa.Table("cl_window_marks", metadata, autoload_with=connection)
        connection.execute(sa.delete(marks))
        last = float(first + count - 1)
        connection.execute(
            sa.insert(marks), [{"use_case": "bench", "outcome": "click", "closed_before": last}]
        )
    return last


def trainer_on(directory: Path, url: str, max_rows: int) -> Trainer:
    config = parse_config(CONFIG, environ={})
    config = config.model_copy(
        update={"infrastructure": config.infrastructure.model_copy(update={"data_dir": str(directory)})}
    )
    return Trainer(
        config,
        store=ExampleStore.from_url(url),
        source=FileEventSource(FileEventLog(directory / "events"), Topics("closedloop")),
        registry=LocalModelRegistry(directory / "registry"),
        clock=time.time,
        max_training_rows=max_rows,
    )


def timed_train(trainer: Trainer) -> tuple[float, int]:
    started = time.perf_counter()
    [run] = trainer.train("bench")
    return time.perf_counter() - started, int(run.report["lineage"]["rows_read"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--max-rows", type=int, default=1_000_000)
    args = parser.parse_args()
    print(f"retrain after {NEW_ROWS:,} new final examples; 50 trees; training window {args.max_rows:,} rows")
    print(
        f"{'stored':>10} {'cached: s':>10} {'rows read':>10} {'uncached: s':>12} {'rows read':>10} {'ratio':>6}"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        directory = Path(tempfile.mkdtemp(prefix="closedloop-retrain-"))
        url = f"sqlite:///{directory / 'metadata.db'}"
        rng = np.random.default_rng(0)
        store = ExampleStore.from_url(url)
        fill(store, 0, size, rng)
        store.close()
        cached = trainer_on(directory, url, args.max_rows)
        timed_train(cached)  # the first retrain reads everything, and fills the cache
        store = ExampleStore.from_url(url)
        fill(store, size, NEW_ROWS, rng)
        store.close()
        with_cache, read_cached = timed_train(cached)
        uncached = trainer_on(directory, url, args.max_rows)
        without_cache, read_all = timed_train(uncached)
        print(
            f"{size:>10,} {with_cache:>10.2f} {read_cached:>10,} {without_cache:>12.2f} {read_all:>10,}"
            f" {without_cache / with_cache:>6.1f}",
            flush=True,
        )
        cached.close()
        uncached.close()


if __name__ == "__main__":
    main()
