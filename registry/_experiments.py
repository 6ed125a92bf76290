"""Starting, changing and stopping experiments: the phase history every decision service follows.

A phase is one allocation (arms, shares, holdout, salt). Starting an experiment whose allocation
differs from the running phase ends that phase and begins the next, so no analysis mixes units
assigned under two allocations.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from closedloop.contracts import (
    ArmConfig,
    ExperimentConfig,
    ExperimentError,
    ExperimentPhase,
    UnknownExperimentError,
)

from ._protocol import ModelRegistry

_ATTEMPTS = 20


def start_experiment(
    registry: ModelRegistry,
    use_case: str,
    name: str,
    experiment: ExperimentConfig,
    *,
    now: float | None = None,
    arms: Mapping[str, ArmConfig] | None = None,
    others: Iterable[str] = (),
) -> ExperimentPhase:
    """Begin (or change the allocation of) an experiment; a start with the running allocation is a
    no-op. ``arms`` replaces the declared arms (the tuner's candidates); ``others`` are the other
    experiments of the same use case, of which none may be running."""
    for other in others:
        phases = registry.phases(other)
        if other != name and phases and phases[-1].running:
            raise ExperimentError(
                f"Experiment {other!r} is already running on use case {use_case!r}; "
                f"stop it before starting {name!r}.",
                hint=f"closedloop experiments stop {other}",
            )
    wanted = dict(arms if arms is not None else experiment.arms)
    salt = experiment.salt or name
    for _ in range(_ATTEMPTS):
        history = registry.phases(name)
        at = time.time() if now is None else now
        last = history[-1] if history else None
        if last is not None and last.running:
            if last.arms == wanted and last.holdout == experiment.holdout and last.salt == salt:
                return last
            history[-1] = last.model_copy(update={"stopped_at": at})
        phase = ExperimentPhase(
            experiment=name,
            use_case=use_case,
            phase=len(history) + 1,
            started_at=at,
            reason="change" if last is not None and last.running else "start",
            arms=wanted,
            holdout=experiment.holdout,
            salt=salt,
        )
        if registry.replace_phases(name, [*history, phase], expected=len(history)):
            return phase
    raise ExperimentError(f"Experiment {name!r} kept changing while it was being started; try again.")


def stop_experiment(registry: ModelRegistry, name: str, *, now: float | None = None) -> ExperimentPhase:
    """End the running phase; units fall back to the use case's own policy."""
    for _ in range(_ATTEMPTS):
        history = registry.phases(name)
        if not history:
            raise UnknownExperimentError(
                f"Experiment {name!r} was never started.", field="experiment", value=name
            )
        if not history[-1].running:
            raise ExperimentError(
                f"Experiment {name!r} is not running (it stopped at phase {history[-1].phase})."
            )
        at = time.time() if now is None else now
        stopped = history[-1].model_copy(update={"stopped_at": at})
        if registry.replace_phases(name, [*history[:-1], stopped], expected=len(history)):
            return stopped
    raise ExperimentError(f"Experiment {name!r} kept changing while it was being stopped; try again.")


def running_phases(registry: ModelRegistry) -> dict[str, ExperimentPhase]:
    """The running phase of each use case that has one."""
    running: dict[str, ExperimentPhase] = {}
    for name in registry.experiment_names():
        history = registry.phases(name)
        if history and history[-1].running:
            running[history[-1].use_case] = history[-1]
    return running
