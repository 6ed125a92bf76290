"""The Ax side of a tuning run: one `ax.Client` built from the tuning space, saved as JSON.

Three ways to propose configurations share it, so that the benchmark compares search strategies
with everything else equal: ``bayesian`` (Ax's default: a Sobol start, then a GP with noisy
expected improvement), ``random`` (Ax's random search) and ``grid`` (a full-factorial grid in
shuffled order, attached to the same experiment; written here because Ax has no grid generator).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ._space import Measurement, Parameterization, TuningSpace, ax_name

MeasuredTrials = Mapping[int, tuple[Parameterization, Measurement]]
"""Trial index -> (parameters keyed by path, measurement)."""

Method = Literal["bayesian", "random", "grid"]
METHODS: tuple[Method, ...] = ("bayesian", "random", "grid")
_GENERATION_ATTEMPTS = 5


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    # Ax logs every trial at INFO and BoTorch warns about its numerics; neither is actionable for a
    # product engineer, and what matters (trials, measurements, the recommendation) is in our report.
    # Ax sets a level on each of its module loggers, so the parent's level alone does not hold them.
    names = [n for n in logging.root.manager.loggerDict if n == "ax" or n.startswith("ax.")]
    loggers = [logging.getLogger(n) for n in ["ax", *names]]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module=r"(ax|botorch|gpytorch|linear_operator|torch)(\.|$)")
            warnings.filterwarnings("ignore", category=RuntimeWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


@dataclass(frozen=True)
class Candidate:
    """A configuration Ax considers best (or on the Pareto front), with what it expects of it."""

    trial_index: int
    parameters: Parameterization
    predicted: Measurement


class AxSession:
    def __init__(self, client: Any, space: TuningSpace, method: Method, seed: int) -> None:
        self.client = client
        self.space = space
        self.method = method
        self.seed = seed

    @classmethod
    def create(cls, space: TuningSpace, *, name: str, method: Method, seed: int) -> AxSession:
        with _quiet():
            from ax import Client  # its first import warns about Ax's and torch's own deprecations

            client = Client(random_seed=seed)
            client.configure_experiment(parameters=space.ax_parameters(), name=name)
            client.configure_optimization(
                objective=space.ax_objective(), outcome_constraints=space.ax_constraints() or None
            )
            batch = space.tuning.arms_per_round
            if method == "bayesian":
                client.configure_generation_strategy(
                    method="fast",
                    initialization_budget=batch,
                    initialization_random_seed=seed,
                    min_observed_initialization_trials=batch,
                )
            else:
                client.configure_generation_strategy(method="random_search", initialization_random_seed=seed)
        return cls(client, space, method, seed)

    @classmethod
    def restore(cls, state: str, space: TuningSpace, method: Method, seed: int) -> AxSession:
        with _quiet(), _temporary_file(state) as path:
            from ax import Client

            client = Client.load_from_json_file(path)
        return cls(client, space, method, seed)

    def state(self) -> str:
        with _quiet(), _temporary_file("") as path:
            self.client.save_to_json_file(path)
            with open(path) as file:
                return file.read()

    # -- proposing --------------------------------------------------------------------------------

    def next_trials(self, count: int, *, tried: int) -> dict[int, Parameterization]:
        """``count`` new trials (running in Ax), keyed by trial index, parameters keyed by path;
        ``tried``: how many trials the run has (the grid's position)."""
        if self.method == "grid":
            return {self.attach(p): p for p in self._grid()[tried : tried + count]}
        proposed: dict[int, Parameterization] = {}
        with _quiet():
            # Ax may return fewer than asked when it moves from its Sobol start to the model.
            for _ in range(_GENERATION_ATTEMPTS):
                if len(proposed) >= count:
                    break
                more = self.client.get_next_trials(max_trials=count - len(proposed))
                proposed |= {index: self.space.paths(p) for index, p in more.items()}
        return proposed

    def attach(self, parameters: Parameterization) -> int:
        """Add a trial with given parameters (keyed by path): a grid point, or an offline result."""
        with _quiet():
            index: int = self.client.attach_trial(
                parameters={ax_name(path): value for path, value in parameters.items()}
            )
        return index

    def _grid(self) -> list[Parameterization]:
        parameters = self.space.tuning.parameters
        budget = self.space.tuning.rounds * self.space.tuning.arms_per_round
        per_axis = max(2, math.ceil(budget ** (1 / len(parameters))))
        axes = []
        for p in parameters.values():
            if p.log_scale:
                values = np.geomspace(p.low, p.high, per_axis)
            else:
                values = np.linspace(p.low, p.high, per_axis)
            axes.append(
                sorted({round(float(v)) for v in values}) if p.type == "int" else [float(v) for v in values]
            )
        points = [dict(zip(parameters, combo, strict=True)) for combo in itertools.product(*axes)]
        order = np.random.default_rng(self.seed).permutation(len(points))
        return [points[i] for i in order]

    # -- measuring and recommending ---------------------------------------------------------------

    def complete(self, trial_index: int, measurement: Measurement) -> None:
        with _quiet():
            self.client.complete_trial(
                trial_index=trial_index,
                raw_data={k: (float(m), float(s)) for k, (m, s) in measurement.items()},
            )

    def recommendations(self, measured: MeasuredTrials) -> list[Candidate]:
        """The best measured configuration that satisfies the constraints, or the Pareto front;
        empty when no configuration satisfies them."""
        if self.space.pareto:
            return self._pareto_front()
        estimates = self._estimates(measured)
        feasible = {i: e for i, e in estimates.items() if not self.space.violations(e)}
        scored = {i: self.space.scalar_objective(e) for i, e in feasible.items()}
        ranked = [(v, i) for i, v in scored.items() if v is not None and math.isfinite(v)]
        if not ranked:
            return []
        flip = -1.0 if self.space.tuning.objective.minimize else 1.0
        _, best = max(ranked, key=lambda pair: (flip * pair[0], -pair[1]))
        return [Candidate(trial_index=best, parameters=measured[best][0], predicted=estimates[best])]

    def _estimates(self, measured: MeasuredTrials) -> dict[int, Measurement]:
        """Each measured arm's metrics as the Bayesian model sees them, or as observed.

        The arms are chosen *and* judged on noisy measurements, so the best-looking feasible
        observation is biased up (the lucky arm that seems to keep clicks while it loses them).
        The GP's posterior at an arm pools its neighbours' measurements and shrinks that luck;
        random search and the grid have no model, so their choice rests on the observations.
        (Ax's own ``get_best_parameterization`` was tried first: its model-based pick admitted
        arms whose predicted constraint metric was well under the bound.)"""
        observed = {i: dict(m) for i, (_, m) in measured.items()}
        if self.method != "bayesian" or not measured:
            return observed
        indices = list(measured)
        points = [{ax_name(path): v for path, v in measured[i][0].items()} for i in indices]
        with _quiet():
            from ax.exceptions.core import UnsupportedError

            try:
                predicted = self.client.predict(points=points)
            except UnsupportedError:  # no model fitted yet (every measurement is from the Sobol start)
                return observed
        return {
            i: {k: (float(m), float(s)) for k, (m, s) in p.items() if math.isfinite(m)} or observed[i]
            for i, p in zip(indices, predicted, strict=True)
        }

    def _pareto_front(self) -> list[Candidate]:
        use_model = self.method == "bayesian"
        with _quiet():
            try:
                front = self.client.get_pareto_frontier(use_model_predictions=use_model)
            except AssertionError:
                # Ax's way (pyre's none_throws) of saying that no trial satisfies the constraints.
                return []
        # With model predictions Ax hands back each metric's variance where the observations
        # have a standard error; report standard errors throughout.
        return [
            Candidate(
                trial_index=int(index),
                parameters=self.space.paths(parameters),
                predicted={
                    k: (float(m), math.sqrt(float(v)) if use_model else float(v))
                    for k, (m, v) in predicted.items()
                },
            )
            for parameters, predicted, index, _ in front
        ]


@contextlib.contextmanager
def _temporary_file(text: str) -> Iterator[str]:
    # Ax's Client saves and loads its snapshot through files only.
    descriptor, path = tempfile.mkstemp(suffix=".json", prefix="closedloop-ax-")
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
        yield path
    finally:
        os.unlink(path)
