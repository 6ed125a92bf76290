"""Time from feedback logged to a retrained model serving decisions.

A product thread makes decisions and logs clicks at once; a trainer thread runs its cycle
(catch up, close windows, retrain when due, publish) every 0.5 s; the engine polls the registry
every 0.2 s. For each round we take the moment the round's last feedback was logged and wait until
the engine serves a model whose training data (its lineage's ``data_to``) reaches the round's last
decision. A label is final only when its outcome's window has
ended, so the figure includes the window (5 s here) and the trainer's lateness allowance (1 s):
with a 30-minute window, add 30 minutes. Embedded stores (files, SQLite, local registry).

    .venv/bin/python bench/feedback_to_serving.py [--rounds 5] [--decisions 3000]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import numpy as np

from closedloop.contracts import parse_config
from closedloop.registry import ModelRegistry, open_registry
from closedloop.sdk import EmbeddedClient
from closedloop.trainer import open_trainer

WINDOW = 5.0
LATENESS = 1.0
CONFIG = f"""
use_cases:
  offer:
    decision: choose
    context:
      age: {{type: numeric}}
    candidate:
      discount: {{type: numeric}}
    outcomes:
      click: {{type: binary, window: {int(WINDOW)}s}}
    policy:
      value: click
      exploration: {{strategy: epsilon_greedy, epsilon: 0.2}}
    model: {{num_trees: 100}}
    retrain: {{min_new_examples: 1000, every: 2s}}
    promotion: {{min_examples: 200, max_auc_drop: 0.02, max_logloss_increase: 0.02}}
"""


def _trained_through(client: EmbeddedClient, registry: ModelRegistry) -> float:
    """The time of the latest decision the serving click model was trained or evaluated on."""
    version = client.serving_versions("offer").get("click")
    if version is None:
        return 0.0
    [meta] = [v.metadata for v in registry.versions("offer", "click") if v.version == version]
    return datetime.fromisoformat(meta["lineage"]["data_to"]).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--decisions", type=int, default=3000)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="closedloop-bench-"))
    config = parse_config(CONFIG, environ={})
    config = config.model_copy(
        update={"infrastructure": config.infrastructure.model_copy(update={"data_dir": str(directory)})}
    )
    client = EmbeddedClient(config, seed=0, refresh_interval=0.2)
    registry = open_registry(config.infrastructure)
    trainer = open_trainer(config, lateness=LATENESS)  # reads the client's event files
    stop = threading.Event()

    def train_forever() -> None:
        while not stop.is_set():
            trainer.run_once(timeout=0.0)
            stop.wait(0.5)

    thread = threading.Thread(target=train_forever, daemon=True)
    thread.start()
    rng = np.random.default_rng(0)
    latencies, processing = [], []
    for number in range(args.rounds):
        for _ in range(args.decisions):
            age = float(rng.uniform(18, 80))
            offers = {f"o{k}": {"discount": float(rng.uniform(0, 50))} for k in range(5)}
            decision = client.decide("offer", "u", context={"age": age}, candidates=offers)
            discount = offers[decision.choice or "o0"]["discount"]
            if rng.random() < 1 / (1 + np.exp(-(discount - 25) / 5 - (age - 50) / 20)):
                client.log_feedback(decision.decision_id, {"click": 1})
        last_decision = time.time()
        logged = time.monotonic()
        while _trained_through(client, registry) < last_decision - 0.01:
            if time.monotonic() - logged > 120:
                raise SystemExit(f"round {number}: no model trained on this round within 120 s")
            time.sleep(0.02)
        latency = time.monotonic() - logged
        latencies.append(latency)
        processing.append(latency - WINDOW - LATENESS)
        served = client.serving_versions("offer")["click"]
        print(
            f"round {number}: {served} serving {latency:.2f}s after the last feedback "
            f"({WINDOW + LATENESS:.0f}s of it the window and lateness)"
        )
    stop.set()
    thread.join()
    print(
        f"median feedback -> serving: {statistics.median(latencies):.2f}s "
        f"(beyond the window: {statistics.median(processing):.2f}s); max {max(latencies):.2f}s"
    )
    trainer.close()
    registry.close()
    client.close()


if __name__ == "__main__":
    main()
