"""The champion models in memory, refreshed from the registry and swapped without a failed request.

A refresh builds new boosters beside the ones serving and then replaces one immutable snapshot by
another in a single assignment; a request holds the snapshot it started with, so it never sees a
half-loaded model. The snapshot also holds each use case's running experiment phase. A model
whose features do not match its use case is refused (the old one keeps serving) and reported in
``errors``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import lightgbm as lgb
import numpy as np

from closedloop.contracts import ClosedLoopConfig, ExperimentPhase, ModelIncompatibleError
from closedloop.policy import ActiveExperiment, Experience, FeatureEncoder
from closedloop.registry import ModelRegistry, running_phases, version_metadata

from ._row_predictor import RowPredictor

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServingModel:
    version: str
    booster: lgb.Booster
    metadata: Mapping[str, Any] = field(default_factory=dict)
    """The registry's metadata of this version (lineage, label range): what exploration scales by."""
    columns: int | None = None
    """How many leading columns it reads: a model of an earlier version knows no interactions."""

    _predictor: RowPredictor = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_predictor", RowPredictor(self.booster))

    def predict(self, rows: np.ndarray) -> np.ndarray:
        # One thread: for tens of rows, OpenMP start-up costs more than the trees.
        return self._predictor.predict(rows if self.columns is None else rows[:, : self.columns])


@dataclass(frozen=True)
class UseCaseModels:
    """The champions of one use case, one per outcome that has one."""

    by_outcome: Mapping[str, ServingModel] = field(default_factory=dict)
    experiment: ActiveExperiment | None = None
    """The running experiment's phase, if one runs on this use case."""
    experience: Experience = field(default_factory=Experience)

    @property
    def versions(self) -> dict[str, str]:
        return {outcome: model.version for outcome, model in self.by_outcome.items()}


class ServingModels:
    def __init__(self, config: ClosedLoopConfig, registry: ModelRegistry) -> None:
        self._config = config
        self._registry = registry
        self._encoders = {name: FeatureEncoder(uc) for name, uc in config.use_cases.items()}
        self._snapshot: Mapping[str, UseCaseModels] = MappingProxyType(
            {name: UseCaseModels() for name in config.use_cases}
        )
        self._generation = -1
        self._lock = threading.Lock()
        self.swaps = 0
        self.errors: dict[str, str] = {}

    def for_use_case(self, use_case: str) -> UseCaseModels:
        return self._snapshot[use_case]

    def snapshot(self) -> Mapping[str, UseCaseModels]:
        return self._snapshot

    def refresh(self, *, force: bool = False) -> bool:
        """Load any new champion; True if something changed. Safe to call from any thread."""
        with self._lock:
            generation = self._registry.generation()
            if generation == self._generation and not force:
                return False
            current = self._snapshot
            phases = running_phases(self._registry)
            champions = self._registry.all_champions(
                {name: list(uc.outcomes) for name, uc in self._config.use_cases.items()}
            )
            updated = {
                name: self._refreshed(name, current[name], phases.get(name), champions[name])
                for name in self._config.use_cases
            }
            changed = any(updated[name] is not current[name] for name in updated)
            if changed:
                self._snapshot = MappingProxyType(updated)
                self.swaps += 1
            self._generation = generation
            return changed

    def _refreshed(
        self,
        use_case: str,
        current: UseCaseModels,
        phase: ExperimentPhase | None,
        champions: Mapping[str, str | None],
    ) -> UseCaseModels:
        experiment = self._experiment(use_case, current.experiment, phase)
        models = dict(current.by_outcome)
        for outcome, version in champions.items():
            serving = models.get(outcome)
            if version is None or (serving is not None and serving.version == version):
                continue
            key = f"{use_case}/{outcome}/{version}"
            try:
                models[outcome] = self._load(use_case, outcome, version)
                self.errors.pop(f"{use_case}/{outcome}", None)
                logger.info("serving %s", key)
            except (ModelIncompatibleError, KeyError, lgb.basic.LightGBMError) as exc:
                self.errors[f"{use_case}/{outcome}"] = f"{key}: {exc}"
                logger.error("not serving %s: %s", key, exc)
        if (
            experiment is current.experiment
            and models.keys() == current.by_outcome.keys()
            and all(models[o] is current.by_outcome[o] for o in models)
        ):
            return current
        metadata = {outcome: model.metadata for outcome, model in models.items()}
        experience = Experience.of(self._config.use_cases[use_case], metadata)
        return UseCaseModels(MappingProxyType(models), experiment, experience)

    def _experiment(
        self, use_case: str, current: ActiveExperiment | None, phase: ExperimentPhase | None
    ) -> ActiveExperiment | None:
        if phase is None:
            self.errors.pop(f"{use_case}/experiment", None)
            return None
        if current is not None and current.phase == phase:
            return current
        try:
            active = ActiveExperiment(phase, self._config.use_cases[use_case])
        except ValueError as exc:  # e.g. an arm whose overrides this use case cannot apply
            self.errors[f"{use_case}/experiment"] = f"{phase.experiment} phase {phase.phase}: {exc}"
            logger.error("not running experiment %s: %s", phase.experiment, exc)
            return current
        self.errors.pop(f"{use_case}/experiment", None)
        logger.info("running experiment %s phase %d", phase.experiment, phase.phase)
        return active

    def _load(self, use_case: str, outcome: str, version: str) -> ServingModel:
        booster = lgb.Booster(model_str=self._registry.model_text(use_case, outcome, version))
        encoder = self._encoders[use_case]
        expected = encoder.feature_names
        columns = encoder.leading_columns(booster.feature_name())
        if columns == len(expected):
            columns = None
        elif columns is None:
            raise ModelIncompatibleError(
                f"Model {use_case}/{outcome}/{version} was trained on features {booster.feature_name()}, "
                f"but the use case declares {expected}.",
                hint="Retrain the model after changing a use case's features.",
            )
        metadata = version_metadata(self._registry, use_case, outcome, version)
        return ServingModel(version, booster, metadata, columns)


class RefreshLoop:
    """Polls the registry's generation counter and refreshes the serving models when it moves."""

    def __init__(self, models: ServingModels, *, interval: float = 0.5) -> None:
        self._models = models
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-refresh", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self._models.refresh()
            except Exception:  # a registry hiccup must not end the loop: the old models keep serving
                logger.exception("refreshing models from the registry failed")
