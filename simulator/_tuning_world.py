"""A product whose best tuning is known: the ground truth of the tuner's benchmark and tests.

Five offers per request, each with a quality and a margin. Users click good, low-margin offers and
buy high-margin ones. The served models are LightGBM fitted to draws from the truth, so the oracle
can compute the exact expected click and purchase rates of any (purchase weight, epsilon) the way
the engine would serve them, and from those the best configuration that keeps clicks within the
constraint — the optimum the tuner is measured against.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import lightgbm as lgb
import numpy as np

from closedloop.contracts import ClosedLoopConfig, parse_config
from closedloop.policy import FeatureEncoder
from closedloop.registry import ModelRegistry
from closedloop.sdk import EmbeddedClient
from closedloop.tuner import Deployed, Measured, OnlineTuner, Waiting

USE_CASE = "offer"
OFFERS = 5
SEGMENTS = ("a", "b")
"""The categories of the context feature ``segment``, in the order the encoder codes them."""


def tuning_config(**infrastructure: Any) -> ClosedLoopConfig:
    text = resources.files("closedloop.simulator").joinpath("tuning.yaml").read_text()
    config = parse_config(text, source="tuning.yaml", environ={})
    infra = config.infrastructure.model_copy(
        update={k: v for k, v in infrastructure.items() if v is not None}
    )
    return config.model_copy(update={"infrastructure": infra})


def click_probability(segment: np.ndarray, quality: np.ndarray, margin: np.ndarray) -> np.ndarray:
    return np.asarray(np.clip(0.10 + 0.30 * quality - 0.12 * margin + 0.03 * segment, 0.01, 0.99))


def purchase_given_click(segment: np.ndarray, margin: np.ndarray) -> np.ndarray:
    return np.asarray(np.clip(0.08 + 0.60 * margin * margin - 0.04 * segment, 0.0, 1.0))


@dataclass(frozen=True)
class Requests:
    segment: np.ndarray
    """requests"""
    quality: np.ndarray
    """requests x offers"""
    margin: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator, count: int) -> Requests:
        return cls(
            rng.integers(0, 2, count),
            np.round(rng.random((count, OFFERS)), 3),
            np.round(rng.random((count, OFFERS)), 3),
        )

    def true_rates(self) -> tuple[np.ndarray, np.ndarray]:
        """Each offer's click and purchase probability."""
        segment = self.segment[:, None]
        click = click_probability(segment, self.quality, self.margin)
        return click, click * purchase_given_click(segment, self.margin)


class TuningWorld:
    def __init__(self, config: ClosedLoopConfig, *, seed: int = 0, oracle_requests: int = 20_000) -> None:
        self.config = config
        self.use_case = config.use_cases[USE_CASE]
        self.encoder = FeatureEncoder(self.use_case)
        self.rng = np.random.default_rng(seed)
        truth = np.random.default_rng(10_000)  # the models and the oracle's requests: the same for every seed
        self.models = self._fit_models(truth)
        self._oracle = Requests.draw(truth, oracle_requests)
        rows = self._rows(self._oracle)
        shape = self._oracle.quality.shape
        self._predicted = {
            name: np.asarray(m.predict(rows)).reshape(shape) for name, m in self.models.items()
        }
        self._true = self._oracle.true_rates()

    # -- models -----------------------------------------------------------------------------------

    def _rows(self, requests: Requests) -> np.ndarray:
        """The engine's rows for every offer of every request, built as whole columns (the
        encoder's row-by-row path is checked against it on the first request)."""
        count = len(requests.segment)
        segment = np.repeat(requests.segment.astype(float), OFFERS)
        rows = np.column_stack([segment, requests.quality.ravel(), requests.margin.ravel()])
        first = self.encoder.encode(
            {"segment": SEGMENTS[int(requests.segment[0])]},
            [
                {"quality": float(q), "margin": float(m)}
                for q, m in zip(requests.quality[0], requests.margin[0], strict=True)
            ],
        )
        if count and not np.allclose(first, rows[:OFFERS]):
            raise AssertionError("the tuning world's rows no longer match the engine's encoder")
        return rows

    def _fit_models(self, rng: np.random.Generator) -> dict[str, lgb.Booster]:
        requests = Requests.draw(rng, 8000)
        rows = self._rows(requests)
        click, purchase = (rate.ravel() for rate in requests.true_rates())
        params = {"objective": "binary", "verbose": -1, "num_leaves": 15, "learning_rate": 0.1, "seed": 1}
        models = {}
        for name, rate in (("click", click), ("purchase", purchase)):
            labels = (rng.random(len(rate)) < rate).astype(float)
            data = lgb.Dataset(rows, labels, feature_name=list(self.encoder.feature_names))
            models[name] = lgb.train(params, data, num_boost_round=60)
        return models

    def publish_models(self, registry: ModelRegistry) -> None:
        for name, model in self.models.items():
            registry.publish(
                USE_CASE, name, model.model_to_string(), {"source": "tuning world"}, champion=True
            )

    # -- the oracle -------------------------------------------------------------------------------

    def true_metrics(self, purchase_weight: float, epsilon: float) -> dict[str, float]:
        """Expected click and purchase rate per decision of a configuration, served by the engine's
        epsilon-greedy over the models' value ``click + purchase_weight * purchase``."""
        value = self._predicted["click"] + purchase_weight * self._predicted["purchase"]
        greedy = np.argmax(value, axis=1)
        probability = np.full(value.shape, epsilon / OFFERS)
        probability[np.arange(len(greedy)), greedy] += 1.0 - epsilon
        click, purchase = self._true
        return {
            "click": float((probability * click).sum(axis=1).mean()),
            "purchase": float((probability * purchase).sum(axis=1).mean()),
        }

    def status_quo(self) -> dict[str, float]:
        return self.true_metrics(0.0, self.use_case.policy.exploration.model_dump().get("epsilon", 0.0))

    def optimum(self, grid: int = 201) -> tuple[float, dict[str, float]]:
        """The best true purchase rate with clicks at least 90% of the status quo's, and where."""
        tuning = self.use_case.tuning
        assert tuning is not None
        w = tuning.parameters["value.purchase_weight"]
        e = tuning.parameters["exploration.epsilon"]
        floor = 0.9 * self.status_quo()["click"]
        best, where = -np.inf, {}
        for weight in np.linspace(w.low, w.high, grid):
            for epsilon in np.geomspace(e.low, e.high, 25):
                metrics = self.true_metrics(float(weight), float(epsilon))
                if metrics["click"] >= floor and metrics["purchase"] > best:
                    best, where = (
                        metrics["purchase"],
                        {"purchase_weight": float(weight), "epsilon": float(epsilon)},
                    )
        return float(best), where

    # -- live traffic -----------------------------------------------------------------------------

    def serve(
        self,
        client: EmbeddedClient,
        clock: Callable[[], datetime],
        advance: Callable[[float], None],
        units: int,
        prefix: str,
    ) -> None:
        """``units`` new users make one decision each; they click and buy by the truth."""
        requests = Requests.draw(self.rng, units)
        click, purchase = requests.true_rates()
        for i in range(units):
            advance(0.5)
            decision = client.decide(
                USE_CASE,
                f"{prefix}-{i}",
                context={"segment": SEGMENTS[int(requests.segment[i])]},
                candidates={
                    f"o{k}": {"quality": float(q), "margin": float(m)}
                    for k, (q, m) in enumerate(zip(requests.quality[i], requests.margin[i], strict=True))
                },
            )
            k = int(str(decision.choice)[1:])
            clicked = self.rng.random() < click[i, k]
            if not clicked:
                continue
            outcomes = {"click": 1.0}
            if self.rng.random() < purchase[i, k] / click[i, k]:
                outcomes["purchase"] = 1.0
            client.log_feedback(decision.decision_id, outcomes, timestamp=clock())


class SimulatedClock:
    """Simulated time for the engine (datetimes) and the tuner (epoch seconds)."""

    def __init__(self, start: float) -> None:
        self.now = start

    def datetime(self) -> datetime:
        return datetime.fromtimestamp(self.now, UTC)

    def timestamp(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def drive_online_tuner(
    tuner: OnlineTuner,
    world: TuningWorld,
    client: EmbeddedClient,
    clock: SimulatedClock,
    *,
    on_round: Callable[[int], None] | None = None,
    max_steps: int = 10_000,
    stop_after_round: int | None = None,
) -> None:
    """Step an `OnlineTuner` on simulated traffic until it is done: while a round waits for
    units, new users arrive and their outcome windows close; the client follows the registry."""
    tuning = world.use_case.tuning
    assert tuning is not None
    batch = int((tuning.arms_per_round + 1) * tuning.min_units_per_arm * 1.15)
    window = max(o.window.total_seconds() for o in world.use_case.outcomes.values())
    served = 0
    for _ in range(max_steps):
        done = tuner.step()
        client.refresh_models()
        if isinstance(done, Waiting):
            size = batch if served == 0 else max(batch // 10, 50)
            world.serve(client, clock.datetime, clock.advance, size, prefix=f"u{clock.now:.0f}")
            served += size
            clock.advance(window + 1)
        elif isinstance(done, Measured):
            served = 0
            round_ = done.round
            if on_round is not None:
                on_round(round_)
            if stop_after_round is not None and round_ >= stop_after_round:
                return
        elif not isinstance(done, Deployed):
            return
