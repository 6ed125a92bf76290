"""The online tuner: each round's configurations serve live traffic as arms of an experiment, next
to a status-quo arm, and are measured by the causal evaluator once every arm has its sample."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from closedloop.contracts import (
    STATUS_QUO_ARM,
    ArmConfig,
    ClosedLoopConfig,
    ExperimentConfig,
    tuning_experiment_name,
)
from closedloop.evaluation import ExperimentReport, ExperimentWatch
from closedloop.registry import ModelRegistry, start_experiment, stop_experiment

from ._ax import Method
from ._loop import RoundMeasurements, TuningLoop
from ._space import Measurement, Parameterization
from ._steps import Waiting
from ._store import RoundRecord, TrialRecord, TuningStore

PROMOTED_ARM = "tuned"


class OnlineTuner(TuningLoop):
    mode = "online"

    def __init__(
        self,
        config: ClosedLoopConfig,
        use_case_name: str,
        *,
        store: TuningStore,
        registry: ModelRegistry,
        method: Method = "bayesian",
        clock: Callable[[], float] = time.time,
        seeds: Sequence[Parameterization] = (),
        consumer_config: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(
            config,
            use_case_name,
            store=store,
            registry=registry,
            method=method,
            clock=clock,
            seeds=seeds,
            consumer_config=consumer_config,
        )
        self.experiment = tuning_experiment_name(use_case_name)
        self._watch: ExperimentWatch | None = None  # the measured round's, kept between polls

    def _arms(self, trials: Sequence[TrialRecord]) -> dict[str, ArmConfig]:
        share = 1.0 / (len(trials) + 1)
        arms = {STATUS_QUO_ARM: ArmConfig(share=share, control=True)}
        arms |= {t.arm: self.space.arm(t.parameters, share) for t in trials}
        return arms

    def _experiment_config(self, round_: int, arms: Mapping[str, ArmConfig]) -> ExperimentConfig:
        return ExperimentConfig(
            description=f"tuning round {round_} of {self.use_case_name!r}",
            arms=dict(arms),
            salt=f"{self.experiment}-round{round_}",  # a new shuffle of units every round
        )

    def deployed(self, current: RoundRecord, trials: Sequence[TrialRecord]) -> None:
        arms = self._arms(trials)
        phase = start_experiment(
            self.registry,
            self.use_case_name,
            self.experiment,
            self._experiment_config(current.round, arms),
            arms=arms,
            others=list(self.config.use_cases[self.use_case_name].experiments),
            now=self.clock(),
        )
        if phase.phase != current.phase:
            self.store.set_phase(self.run_name, current.round, phase.phase)

    def measure(self, current: RoundRecord, trials: Sequence[TrialRecord]) -> RoundMeasurements | Waiting:
        arms = self._arms(trials)
        use_case = self.config.use_cases[self.use_case_name]
        experiments = {**use_case.experiments, self.experiment: self._experiment_config(current.round, arms)}
        config = self.config.model_copy(
            update={
                "use_cases": {
                    **self.config.use_cases,
                    self.use_case_name: use_case.model_copy(update={"experiments": experiments}),
                }
            }
        )
        phase = self.store.rounds(self.run_name)[current.round - 1].phase
        report = self._round_watch(config, phase).report(as_of=self.clock())
        units = {arm.name: arm.units for arm in report.arms}
        needed = self.space.tuning.min_units_per_arm
        short = {name: units.get(name, 0) for name in arms if units.get(name, 0) < needed}
        if short:
            listing = ", ".join(f"{name} {count}/{needed}" for name, count in short.items())
            return Waiting(f"units with closed outcome windows: {listing}")
        measured = _measurements(report, self.space.measured_metrics)
        baseline = measured[STATUS_QUO_ARM]
        return RoundMeasurements(
            baseline=baseline,
            baseline_units=units[STATUS_QUO_ARM],
            trials={
                t.trial_index: (self.space.with_relative(measured[t.arm], baseline), units[t.arm])
                for t in trials
            },
        )

    def _round_watch(self, config: ClosedLoopConfig, phase: int | None) -> ExperimentWatch:
        """The round's watch: each poll reads only the events logged since the previous poll."""
        if self._watch is None or self._watch.phase != phase:
            self.close()
            self._watch = ExperimentWatch(
                config,
                self.experiment,
                registry=self.registry,
                phase=phase,
                consumer_config=self.consumer_config,
                detail=False,
            )
        return self._watch

    def close(self) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None

    def finished(self, recommendation: Mapping[str, Any]) -> None:
        self.close()  # no round is measured any more
        history = self.registry.phases(self.experiment)
        best = recommendation["configurations"]
        if self.space.tuning.promote and len(best) == 1:
            arm = self.space.arm(best[0]["parameters"], 1.0).model_copy(update={"control": True})
            promoted = {PROMOTED_ARM: arm}
            start_experiment(
                self.registry,
                self.use_case_name,
                self.experiment,
                ExperimentConfig(
                    arms={PROMOTED_ARM: arm, STATUS_QUO_ARM: ArmConfig(share=0.0)},
                    salt=f"{self.experiment}-promoted",
                ),
                arms=promoted,
                now=self.clock(),
            )
        elif history and history[-1].running:
            stop_experiment(self.registry, self.experiment, now=self.clock())

    def stop(self) -> None:
        super().stop()
        self.close()
        history = self.registry.phases(self.experiment)
        if history and history[-1].running:
            stop_experiment(self.registry, self.experiment, now=self.clock())


def _measurements(report: ExperimentReport, metrics: Sequence[str]) -> dict[str, Measurement]:
    """arm -> metric -> (mean, standard error), from the evaluator's per-arm metric results."""
    by_arm: dict[str, Measurement] = {}
    for result in report.metrics:
        if result.name not in metrics:
            continue
        for arm in result.arms:
            if arm.mean is not None:
                by_arm.setdefault(arm.arm, {})[result.name] = (arm.mean, arm.se or 0.0)
    return by_arm
