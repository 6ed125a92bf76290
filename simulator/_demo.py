"""`closedloop demo`: the whole loop on a simulated product, in simulated time.

Each round is one simulated hour of traffic: the product asks the SDK for a decision per request,
shows the chosen item, and reports the click or purchase when (and if) it happens. At the end of
the round the trainer catches up on the log, closes windows, retrains if its trigger fired, and the
service hot-swaps what passed the gate. After the last round, the default, learned and oracle
policies are scored on fresh requests against the hidden truth.
"""

from __future__ import annotations

import heapq
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from closedloop.contracts import ClosedLoopConfig, parse_config
from closedloop.sdk import EmbeddedClient
from closedloop.trainer import Trainer, TrainingRun, open_trainer

from ._world import Request, World

USE_CASE = "recommend"
ROUND_SECONDS = 3600.0
START = datetime(2026, 1, 5, 8, 0, tzinfo=UTC).timestamp()


def demo_config(**infrastructure: Any) -> ClosedLoopConfig:
    text = resources.files("closedloop.simulator").joinpath("demo.yaml").read_text()
    config = parse_config(text, source="demo.yaml")
    infra = config.infrastructure.model_copy(
        update={k: v for k, v in infrastructure.items() if v is not None}
    )
    return config.model_copy(update={"infrastructure": infra})


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high}


@dataclass
class RoundSummary:
    round: int
    decisions: int
    model_share: float
    """Share of decisions the learned policy made (the rest: the default policy)."""
    realized_reward: float
    expected_reward: float
    oracle_reward: float
    versions: dict[str, str]


@dataclass
class DemoResult:
    rounds: list[RoundSummary] = field(default_factory=list)
    runs: list[TrainingRun] = field(default_factory=list)
    evaluation: dict[str, Any] = field(default_factory=dict)
    live: dict[str, Any] = field(default_factory=dict)
    trainer_counters: dict[str, int] = field(default_factory=dict)


class _Clock:
    def __init__(self, start: float) -> None:
        self.now = start

    def datetime(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)


@dataclass(order=True)
class _Pending:
    due: float
    sequence: int
    decision_id: str = field(compare=False)
    outcomes: dict[str, float] = field(compare=False)


class Demo:
    def __init__(
        self,
        config: ClosedLoopConfig,
        *,
        seed: int = 0,
        consumer_config: dict[str, Any] | None = None,
        database_schema: str | None = None,
        progress: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.world = World(seed=seed)
        self.clock = _Clock(START)
        self._say = progress or (lambda _message: None)
        self.client = EmbeddedClient(config, seed=seed, clock=self.clock.datetime, refresh_interval=3600)
        self.trainer: Trainer = open_trainer(
            config,
            clock=lambda: self.clock.now,
            consumer_config=consumer_config,
            database_schema=database_schema,
            progress=self._say,
        )
        self._feedback: list[_Pending] = []
        self._sequence = 0
        self.result = DemoResult()
        self._live: dict[str, list[float]] = {"default": [], "model": []}

    def run(
        self, rounds: int, decisions_per_round: int, *, on_decision: Callable[[], None] | None = None
    ) -> DemoResult:
        for number in range(rounds):
            self.result.rounds.append(self._round(number, decisions_per_round, on_decision))
            self._learn()
        self.result.evaluation = self.evaluate()
        self.result.live = self._live_comparison()
        self.result.trainer_counters = self.trainer.store.counters()
        return self.result

    def _round(self, number: int, decisions: int, on_decision: Callable[[], None] | None) -> RoundSummary:
        start = self.clock.now
        realized, expected, oracle, by_model = [], [], [], 0
        for i in range(decisions):
            self.clock.now = start + ROUND_SECONDS * i / decisions
            self._deliver_feedback()
            request = self.world.request()
            decision = self.client.decide(
                USE_CASE, request.unit_id, context=request.context, candidates=request.candidates
            )
            position = list(request.candidates).index(decision.choice or "")
            response = self.world.respond(request, position)
            truth = self.world.expected_reward(request)
            realized.append(response.reward)
            expected.append(float(truth[position]))
            oracle.append(float(truth.max()))
            by_model += decision.policy == "model"
            self._live[decision.policy].append(response.reward)
            self._schedule(decision.decision_id, response)
            if on_decision is not None:
                on_decision()
        self.clock.now = start + ROUND_SECONDS
        self._deliver_feedback()
        return RoundSummary(
            round=number,
            decisions=decisions,
            model_share=by_model / decisions,
            realized_reward=float(np.mean(realized)),
            expected_reward=float(np.mean(expected)),
            oracle_reward=float(np.mean(oracle)),
            versions=self.client.serving_versions(USE_CASE),
        )

    def _schedule(self, decision_id: str, response: Any) -> None:
        # Product code reports what happened when it happens; silence becomes the window's default.
        if response.clicked:
            self._push(self.clock.now + response.click_delay, decision_id, {"click": 1.0})
        if response.purchased:
            self._push(
                self.clock.now + response.click_delay + response.purchase_delay,
                decision_id,
                {"purchase": 1.0},
            )

    def _push(self, due: float, decision_id: str, outcomes: dict[str, float]) -> None:
        self._sequence += 1
        heapq.heappush(self._feedback, _Pending(due, self._sequence, decision_id, outcomes))

    def _deliver_feedback(self) -> None:
        while self._feedback and self._feedback[0].due <= self.clock.now:
            item = heapq.heappop(self._feedback)
            self.client.log_feedback(
                item.decision_id, item.outcomes, timestamp=datetime.fromtimestamp(item.due, UTC)
            )

    def _learn(self) -> None:
        self.client.flush(timeout=60.0)
        report = self.trainer.run_once(timeout=2.0 if self.config.infrastructure.kafka_bootstrap else 0.0)
        self.result.runs.extend(report.runs)
        self.client.refresh_models()

    # -- scoring the policies against the truth ---------------------------------------------------

    def evaluate(self, requests: int = 2000) -> dict[str, Any]:
        """Expected reward of the default, learned (greedy) and oracle policies on fresh requests."""
        default, learned, oracle = [], [], []
        for _ in range(requests):
            request = self.world.request()
            truth = self.world.expected_reward(request)
            default.append(float(truth[0]))  # the default policy keeps the product's own order
            oracle.append(float(truth.max()))
            learned.append(float(truth[self._greedy_choice(request)]))
        default_a, learned_a, oracle_a = np.array(default), np.array(learned), np.array(oracle)
        return {
            "requests": requests,
            "default": _mean_interval(default_a).as_dict(),
            "learned": _mean_interval(learned_a).as_dict(),
            "oracle": _mean_interval(oracle_a).as_dict(),
            "lift_over_default": _mean_interval(learned_a - default_a).as_dict(),
            "share_of_oracle": float(learned_a.mean() / oracle_a.mean()),
        }

    def _greedy_choice(self, request: Request) -> int:
        values = self.client.model_values(USE_CASE, context=request.context, candidates=request.candidates)
        return 0 if values is None else int(np.argmax(list(values.values())))  # None: the default's first

    def _live_comparison(self) -> dict[str, Any]:
        default, model = np.array(self._live["default"]), np.array(self._live["model"])
        result: dict[str, Any] = {"default_decisions": len(default), "model_decisions": len(model)}
        if len(default) > 1 and len(model) > 1:
            test = stats.ttest_ind(model, default, equal_var=False)
            interval = test.confidence_interval(0.95)
            result["reward_default"] = float(default.mean())
            result["reward_model"] = float(model.mean())
            result["difference"] = Interval(
                float(model.mean() - default.mean()), interval.low, interval.high
            ).as_dict()
            result["p_value"] = float(test.pvalue)
        return result

    def close(self) -> None:
        self.trainer.close()
        self.client.close()


def _mean_interval(values: np.ndarray) -> Interval:
    result = stats.ttest_1samp(values, 0.0)
    interval = result.confidence_interval(0.95)
    return Interval(float(values.mean()), float(interval.low), float(interval.high))


def fresh_demo_directory(output: Path) -> Path:
    """``output/data``: the embedded stores of this run, emptied first (only that folder)."""
    data = output / "data"
    if data.exists():
        shutil.rmtree(data)
    data.mkdir(parents=True)
    return data


def run_id() -> str:
    return uuid.uuid4().hex[:8]
