"""closedloop against Vowpal Wabbit on the same contextual-bandit streams, same seeds.

closedloop runs as a product would: `EmbeddedClient.decide`, `log_feedback` for every click, the
real trainer (`open_trainer`) retraining on its trigger, the engine loading each champion, all on
a simulated clock (one decision a second, click windows of a minute). Vowpal Wabbit
(`--cb_explore_adf --squarecb -q ca`, learning after every decision) sees the same contexts,
candidates and, for the actions it picks, clicks drawn from the same truth.

Streams (10 candidates each):
- ``linear``: click logit bilinear in 5 context and 5 candidate features
- ``nonlinear``: thresholds and products of the features (what a linear learner cannot fit)
- ``digits``: scikit-learn's handwritten digits as a supervised-to-bandit problem: 64 pixels of
  context, 10 actions (the digit), reward 1 for the right one (with 10% label noise)
- ``rank-linear``, ``rank-nonlinear``: rankings of the same candidates with 3 shown slots and
  position bias: a click in slot k happens with probability examination(k) * relevance, the
  examination 1, 0.6, 0.35, the relevance the linear or nonlinear truth above. closedloop decides
  with ``slots=3`` and reports each click with its ``candidate_id``; VW runs its slate learner
  (``--ccb_explore_adf --squarecb -q ca``), each slot's click its cost. The reward is the expected
  clicks over the three slots; the oracle shows the three most relevant, best first.

Printed: each learner's expected reward (from the truth, not the drawn click) over the last
``--last`` decisions, as a share of the oracle's, and wall time.

    .venv/bin/python bench/vs_vw.py [--decisions 30000] [--last 10000] [--streams linear,nonlinear,digits]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from closedloop.contracts import load_config
from closedloop.sdk import EmbeddedClient
from closedloop.trainer import open_trainer

CANDIDATES = 10
START = datetime(2026, 1, 1, tzinfo=UTC).timestamp()


@dataclass
class Round:
    context: dict[str, float]
    candidates: list[dict[str, float]]
    truth: np.ndarray
    """Click probability of each candidate."""


class Stream:
    name: str
    context_names: list[str]
    candidate_names: list[str]

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def next(self) -> Round:
        raise NotImplementedError


class Linear(Stream):
    name = "linear"

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        truth = np.random.default_rng(seed + 1000)
        self.weights = truth.normal(0, 1.0, size=(5, 5))
        self.bias = truth.normal(0, 0.5, size=5)
        self.context_names = [f"x{i}" for i in range(5)]
        self.candidate_names = [f"a{i}" for i in range(5)]

    def next(self) -> Round:
        x = self.rng.normal(size=5)
        a = self.rng.normal(size=(CANDIDATES, 5))
        logit = -1.5 + a @ (self.weights.T @ x) * 0.5 + a @ self.bias * 0.3
        return _round(self, x, a, 1 / (1 + np.exp(-logit)))


class Nonlinear(Stream):
    name = "nonlinear"

    def __init__(self, seed: int) -> None:
        super().__init__(seed)
        self.context_names = [f"x{i}" for i in range(5)]
        self.candidate_names = [f"a{i}" for i in range(5)]

    def next(self) -> Round:
        x = self.rng.uniform(-1, 1, size=5)
        a = self.rng.uniform(-1, 1, size=(CANDIDATES, 5))
        logit = (
            -2.0
            + 2.0 * ((x[0] > 0) == (a[:, 0] > 0))
            + 1.5 * np.sin(3 * x[1] * a[:, 1])
            + 1.2 * (a[:, 2] * x[2] > 0.2)
            - 1.0 * np.abs(a[:, 3] - x[3])
        )
        return _round(self, x, a, 1 / (1 + np.exp(-logit)))


class Digits(Stream):
    name = "digits"

    def __init__(self, seed: int) -> None:
        from sklearn.datasets import load_digits

        super().__init__(seed)
        digits = load_digits()
        self.images = digits.data / 16.0
        self.labels = digits.target
        self.context_names = [f"p{i}" for i in range(64)]
        self.candidate_names = [f"is{d}" for d in range(CANDIDATES)]  # the action, one-hot

    def next(self) -> Round:
        row = int(self.rng.integers(len(self.labels)))
        truth = np.full(CANDIDATES, 0.1 / (CANDIDATES - 1))
        truth[self.labels[row]] = 0.9
        return _round(self, self.images[row], np.eye(CANDIDATES), truth)


def _round(stream: Stream, x: np.ndarray, a: np.ndarray, truth: np.ndarray) -> Round:
    return Round(
        context={n: round(float(v), 4) for n, v in zip(stream.context_names, x, strict=True)},
        candidates=[
            {n: round(float(v), 4) for n, v in zip(stream.candidate_names, row, strict=True)} for row in a
        ],
        truth=np.asarray(truth, dtype=float),
    )


STREAMS: dict[str, Callable[[int], Stream]] = {"linear": Linear, "nonlinear": Nonlinear, "digits": Digits}
EXAMINATION = np.array([1.0, 0.6, 0.35])
"""Position bias of the ranking streams: how often each slot is looked at."""
RANKED = {"rank-linear": "linear", "rank-nonlinear": "nonlinear"}


# -- closedloop -----------------------------------------------------------------------------------


def closedloop_run(
    stream: Stream,
    decisions: int,
    *,
    exploration: dict[str, Any] | None,
    seed: int,
    model: dict[str, Any] | None = None,
    slots: int | None = None,
) -> np.ndarray:
    """Expected reward of each decision: the truth's probability of the chosen candidate, or for
    rankings (``slots``) the expected clicks over the shown slots."""
    directory = Path(tempfile.mkdtemp(prefix=f"closedloop-vw-{stream.name}-"))
    use_case: dict[str, Any] = {
        "decision": "choose" if slots is None else "rank",
        "max_candidates": CANDIDATES,
        "context": {n: {"type": "numeric"} for n in stream.context_names},
        "candidate": {n: {"type": "numeric"} for n in stream.candidate_names},
        "outcomes": {"click": {"type": "binary", "window": "1m"}},
        "policy": {"value": "click"},
    }
    if exploration is not None:
        use_case["policy"]["exploration"] = exploration
    if model:
        use_case["model"] = model
    raw = {"use_cases": {"bench": use_case}, "infrastructure": {"data_dir": str(directory)}}
    path = directory / "closedloop.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    config = load_config(path)
    now = [START]
    client = EmbeddedClient(
        config, seed=seed, clock=lambda: datetime.fromtimestamp(now[0], UTC), refresh_interval=3600
    )
    trainer = open_trainer(config, clock=lambda: now[0], lateness=0.0)
    rng = np.random.default_rng(seed + 7)
    expected = np.zeros(decisions)
    pending: list[tuple[str, float, str | None]] = []
    for i in range(decisions):
        now[0] = START + i
        r = stream.next()
        ids = [f"c{k}" for k in range(CANDIDATES)]
        decision = client.decide(
            "bench",
            f"u{i}",
            context=r.context,
            candidates=dict(zip(ids, r.candidates, strict=True)),
            slots=slots,
        )
        if slots is None:
            chosen = ids.index(decision.choice or "")
            expected[i] = r.truth[chosen]
            if rng.random() < r.truth[chosen]:
                pending.append((decision.decision_id, now[0] + 1, None))
        else:
            shown = [ids.index(c) for c in (decision.ranking or [])[:slots]]
            click = EXAMINATION[: len(shown)] * r.truth[shown]
            expected[i] = click.sum()
            for candidate, p in zip(shown, click, strict=True):
                if rng.random() < p:
                    pending.append((decision.decision_id, now[0] + 1, ids[candidate]))
        if (i + 1) % 1000 == 0:  # the trainer's cycle: every 1000 decisions (simulated minutes)
            for decision_id, at, candidate in pending:
                client.log_feedback(
                    decision_id,
                    {"click": 1},
                    timestamp=datetime.fromtimestamp(at, UTC),
                    candidate_id=candidate,
                )
            pending.clear()
            client.flush()
            now[0] += 120  # every window of this round has closed
            trainer.run_once(timeout=0)
            client.refresh_models()
    client.close()
    trainer.close()
    return expected


# -- Vowpal Wabbit --------------------------------------------------------------------------------


def vw_run(stream: Stream, decisions: int, *, arguments: str, seed: int) -> np.ndarray:
    import vowpalwabbit

    vw = vowpalwabbit.Workspace(f"{arguments} --quiet --random_seed {seed}")
    rng = np.random.default_rng(seed + 7)
    expected = np.zeros(decisions)
    for i in range(decisions):
        r = stream.next()
        shared = "shared |c " + " ".join(f"{n}:{v}" for n, v in r.context.items())
        actions = ["|a " + " ".join(f"{n}:{v}" for n, v in c.items()) for c in r.candidates]
        pmf = np.asarray(vw.predict([shared, *actions]), dtype=float)
        pmf = pmf / pmf.sum()
        chosen = int(rng.choice(CANDIDATES, p=pmf))
        expected[i] = r.truth[chosen]
        cost = -1.0 if rng.random() < r.truth[chosen] else 0.0
        labelled = list(actions)
        labelled[chosen] = f"0:{cost}:{pmf[chosen]} {actions[chosen]}"
        vw.learn([shared, *labelled])
    vw.finish()
    return expected


def vw_slate_run(stream: Stream, decisions: int, *, arguments: str, seed: int, slots: int) -> np.ndarray:
    """VW's conditional contextual bandit (its slate learner): each slot a sequential choice
    among the actions not placed yet, learning from every slot's click."""
    import vowpalwabbit

    vw = vowpalwabbit.Workspace(f"{arguments} --quiet --random_seed {seed}")
    rng = np.random.default_rng(seed + 7)
    expected = np.zeros(decisions)
    for i in range(decisions):
        r = stream.next()
        shared = "ccb shared |c " + " ".join(f"{n}:{v}" for n, v in r.context.items())
        actions = ["ccb action |a " + " ".join(f"{n}:{v}" for n, v in c.items()) for c in r.candidates]
        prediction = vw.predict([shared, *actions, *(["ccb slot |s"] * slots)])
        chosen = [(int(slot[0][0]), float(slot[0][1])) for slot in prediction]  # VW samples first
        click = EXAMINATION[:slots] * r.truth[[a for a, _ in chosen]]
        expected[i] = click.sum()
        labels = [
            f"ccb slot {a}:{-1.0 if rng.random() < p else 0.0}:{probability} |s"
            for (a, probability), p in zip(chosen, click, strict=True)
        ]
        vw.learn([shared, *actions, *labels])
    vw.finish()
    return expected


def oracle(stream: Stream, decisions: int, *, slots: int | None = None) -> np.ndarray:
    if slots is None:
        return np.array([stream.next().truth.max() for _ in range(decisions)])
    return np.array(
        [(EXAMINATION[:slots] * np.sort(stream.next().truth)[::-1][:slots]).sum() for _ in range(decisions)]
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--decisions", type=int, default=30_000)
    parser.add_argument("--last", type=int, default=10_000)
    parser.add_argument("--streams", default="linear,nonlinear,digits,rank-linear,rank-nonlinear")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--closedloop", default="default,epsilon_greedy", help="explorations to run")
    parser.add_argument(
        "--model", default="{}", help='closedloop model settings, JSON: {"learning_rate": 0.1}'
    )
    args = parser.parse_args()
    explorations: dict[str, dict[str, Any] | None] = {
        "default": None,
        "epsilon_greedy": {"strategy": "epsilon_greedy", "epsilon": 0.1},
        "squarecb": {"strategy": "squarecb"},
        "squarecb30": {"strategy": "squarecb", "gamma_scale": 30},
        "squarecb100": {"strategy": "squarecb", "gamma_scale": 100},
        "softmax": {"strategy": "softmax", "temperature": 0.1},
    }
    print(f"{args.decisions:,} decisions per stream; expected reward over the last {args.last:,} / oracle's")
    for name in args.streams.split(","):
        slots = len(EXAMINATION) if name in RANKED else None
        make = STREAMS[RANKED.get(name, name)]
        best = oracle(make(args.seed), args.decisions, slots=slots)[-args.last :].sum()
        rows = []
        started = time.perf_counter()
        if slots is None:
            peer = "VW --cb_explore_adf --squarecb -q ca"
            vw = vw_run(make(args.seed), args.decisions, arguments=peer[3:], seed=args.seed)
        else:
            peer = "VW --ccb_explore_adf --squarecb -q ca"
            vw = vw_slate_run(
                make(args.seed), args.decisions, arguments=peer[3:], seed=args.seed, slots=slots
            )
        rows.append((peer, vw, time.perf_counter() - started))
        for label in args.closedloop.split(","):
            started = time.perf_counter()
            ours = closedloop_run(
                make(args.seed),
                args.decisions,
                exploration=explorations[label],
                seed=args.seed,
                model=json.loads(args.model),
                slots=slots,
            )
            rows.append((f"closedloop ({label})", ours, time.perf_counter() - started))
        print(f"\n{name}")
        for label, rewards, seconds in rows:
            share = rewards[-args.last :].sum() / best
            print(f"  {label:<42} {share:7.1%} of oracle   {seconds:7.1f} s", flush=True)


if __name__ == "__main__":
    main()
