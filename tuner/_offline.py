"""The offline tuner: configurations measured on logged decisions alone, by their doubly robust
off-policy values, to pre-screen candidates before they spend live traffic.

The logs are read and the reward models fitted once per run (`OfflineEvaluator`). The status quo
is the use case's own policy with the champion models, evaluated on the same sample. When model
parameters are tuned, the earliest half of the sample trains each candidate's models and the
later half evaluates the policy that uses them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightgbm as lgb
import numpy as np

from closedloop.contracts import ClosedLoopConfig, TuningError
from closedloop.evaluation import OfflineEvaluator, OffPolicyEstimates, TrainingRows
from closedloop.policy import Experience, FeatureEncoder
from closedloop.registry import ModelRegistry, champion_metadata
from closedloop.trainer import Dataset, fit, lightgbm_params

from ._ax import Method
from ._loop import RoundMeasurements, TuningLoop
from ._space import Measurement, Parameterization, TuningSpace
from ._steps import Waiting
from ._store import RoundRecord, TrialRecord, TuningStore

TRAINING_FRACTION = 0.5


class OfflineTuner(TuningLoop):
    mode = "offline"

    def __init__(
        self,
        config: ClosedLoopConfig,
        use_case_name: str,
        *,
        store: TuningStore,
        registry: ModelRegistry,
        method: Method = "bayesian",
        clock: Callable[[], float] = time.time,
        sample: int = 20_000,
        since: float | None = None,
        consumer_config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(
            config,
            use_case_name,
            store=store,
            registry=registry,
            method=method,
            clock=clock,
            consumer_config=consumer_config,
        )
        self.sample = sample
        self.since = since
        self._evaluator: OfflineEvaluator | None = None
        self._champions: dict[str, lgb.Booster] | None = None
        self._baseline: Measurement | None = None

    @property
    def evaluator(self) -> OfflineEvaluator:
        if self._evaluator is None:
            tunes_models = any(p.startswith("model.") for p in self.space.tuning.parameters)
            try:
                self._evaluator = OfflineEvaluator.from_logs(
                    self.config,
                    self.use_case_name,
                    self.space.measured_metrics,
                    as_of=self.clock(),
                    since=self.since,
                    sample=self.sample,
                    training_fraction=TRAINING_FRACTION if tunes_models else 0.0,
                    consumer_config=self.consumer_config,
                )
            except ValueError as exc:
                raise TuningError(
                    f"Cannot tune {self.use_case_name!r} offline: {exc}.",
                    hint="Offline tuning needs logged decisions with propensities and closed windows.",
                ) from exc
        return self._evaluator

    def champions(self) -> dict[str, lgb.Booster]:
        if self._champions is None:
            outcomes = list(self.space.use_case.outcomes)
            self._champions = {
                outcome: lgb.Booster(model_str=self.registry.model_text(self.use_case_name, outcome, version))
                for outcome, version in self.registry.champions(self.use_case_name, outcomes).items()
                if version is not None
            }
        return self._champions

    def experience(self) -> Experience:
        """What the champions learned from; refitted trial models are judged as if alike."""
        outcomes = list(self.space.use_case.outcomes)
        return Experience.of(
            self.space.use_case, champion_metadata(self.registry, self.use_case_name, outcomes)
        )

    def baseline(self) -> Measurement:
        if self._baseline is None:
            estimates = self.evaluator.evaluate(None, self.champions(), self.experience())
            self._baseline = _measurement(estimates)
        return self._baseline

    def measure(self, current: RoundRecord, trials: Sequence[TrialRecord]) -> RoundMeasurements | Waiting:
        baseline = self.baseline()
        measured = {}
        for trial in trials:
            models = self._models_for(trial.parameters)
            arm = self.space.arm_policy(trial.parameters)
            values = _measurement(self.evaluator.evaluate(arm, models, self.experience()))
            measured[trial.trial_index] = (
                self.space.with_relative(values, baseline),
                self.evaluator.decisions,
            )
        return RoundMeasurements(baseline=baseline, baseline_units=self.evaluator.decisions, trials=measured)

    def _models_for(self, parameters: Parameterization) -> dict[str, lgb.Booster]:
        overrides = self.space.model_overrides(parameters)
        if not overrides:
            return self.champions()
        rows = self.evaluator.training_rows()
        assert rows is not None  # from_logs kept a training part because model.* is tuned
        return _fit_models(self.space, overrides, rows)


def _fit_models(
    space: TuningSpace, overrides: Mapping[str, Any], rows: TrainingRows
) -> dict[str, lgb.Booster]:
    use_case = space.use_case
    tuned = use_case.model_copy(update={"model": use_case.model.model_copy(update=dict(overrides))})
    encoder = FeatureEncoder(use_case)
    models = {}
    for name, outcome in use_case.outcomes.items():
        labels = rows.outcomes[name]
        data = Dataset(rows.features, labels, np.zeros(len(labels)))
        models[name] = fit(
            data, encoder, lightgbm_params(tuned, outcome, seed=space.tuning.seed), tuned.model.num_trees
        )
    return models


def _measurement(estimates: Mapping[str, OffPolicyEstimates]) -> Measurement:
    """Each metric's doubly robust estimate and its standard error (from the 95% interval)."""
    return {
        metric: (e.doubly_robust.estimate, e.doubly_robust.standard_error) for metric, e in estimates.items()
    }
