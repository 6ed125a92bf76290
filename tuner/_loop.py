"""The round-by-round loop both tuners share: propose, commit, deploy, measure, complete, recommend.

A round's trials are committed with the Ax state before anything serves them, and its
measurements with the Ax state that holds them (see `TuningStore`); every step reads where the run
stands from the store, so a tuner restarted at any point continues the same round.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from closedloop.contracts import ClosedLoopConfig, TuningError
from closedloop.registry import ModelRegistry

from ._ax import AxSession, Method
from ._space import Measurement, Parameterization, TuningSpace
from ._steps import Deployed, Finished, Inactive, Measured, StepResult, Waiting
from ._store import RoundRecord, RunRecord, TrialRecord, TuningStore

Progress = Callable[[str], None]


@dataclass(frozen=True)
class RoundMeasurements:
    baseline: Measurement | None
    baseline_units: int | None
    trials: dict[int, tuple[Measurement, int]]
    """trial index -> (measurement with the relative metrics, units measured)"""


class TuningLoop:
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
        self.config = config
        self.use_case_name = use_case_name
        self.space = TuningSpace.of(
            use_case_name, config.use_cases[use_case_name], online=self.mode == "online"
        )
        self.store = store
        self.registry = registry
        self.consumer_config = consumer_config
        self.method = method
        self.clock = clock
        self.seeds = list(seeds)
        self.run_name = f"{use_case_name}.{self.mode}"
        self._session: AxSession | None = None

    # -- the run ----------------------------------------------------------------------------------

    def record(self) -> RunRecord | None:
        return self.store.run(self.run_name)

    def begin(self, *, fresh: bool = False) -> RunRecord:
        """Create the run, or resume it (a stopped run starts running again)."""
        existing = self.record()
        if existing is not None and fresh:
            self.store.delete_run(self.run_name)
            existing = None
        if existing is None:
            session = AxSession.create(
                self.space,
                name=self.run_name.replace(".", "_"),
                method=self.method,
                seed=self.space.tuning.seed,
            )
            now = self.clock()
            self.store.create_run(
                RunRecord(
                    run=self.run_name,
                    use_case=self.use_case_name,
                    mode=self.mode,
                    method=self.method,
                    status="running",
                    rounds_done=0,
                    ax_state=session.state(),
                    started_at=now,
                    updated_at=now,
                )
            )
            self._session = session
        elif existing.status == "done":
            raise TuningError(
                f"The {self.mode} tuning run of {self.use_case_name!r} is finished.",
                hint="See it with closedloop tune report; start a new one with --fresh.",
            )
        elif existing.method != self.method:
            raise TuningError(
                f"The {self.mode} tuning run of {self.use_case_name!r} uses the {existing.method} method, "
                f"not {self.method}.",
                hint="Resume it with the same method, or start a new one with --fresh.",
            )
        elif existing.status == "stopped":
            self.store.set_status(self.run_name, "running")
        record = self.record()
        assert record is not None
        return record

    @property
    def session(self) -> AxSession:
        if self._session is None:
            record = self.record()
            if record is None:
                raise TuningError(f"No {self.mode} tuning run of {self.use_case_name!r} has started.")
            self._session = AxSession.restore(
                record.ax_state, self.space, self.method, self.space.tuning.seed
            )
        return self._session

    def step(self) -> StepResult:
        """Advance the run by what can be done now; say what was done."""
        record = self.record()
        if record is None or record.status != "running":
            return Inactive(record.status if record else "not started")
        rounds = self.store.rounds(self.run_name)
        current = rounds[-1] if rounds and rounds[-1].status == "deployed" else None
        if current is None:
            if record.rounds_done >= self.space.tuning.rounds:
                self.finish()
                return Finished()
            current = self._propose_round(record.rounds_done + 1)
            self.deployed(current, self._trials_of(current.round))
            return Deployed(current.round)
        trials = self._trials_of(current.round)
        self.deployed(current, trials)  # idempotent: a restarted tuner makes sure its arms serve
        measured = self.measure(current, trials)
        if isinstance(measured, Waiting):
            return measured
        self._complete(current.round, measured)
        return Measured(current.round)

    def _trials_of(self, round_: int) -> list[TrialRecord]:
        return [t for t in self.store.trials(self.run_name) if t.round == round_]

    def _propose_round(self, round_: int) -> RoundRecord:
        count = self.space.tuning.arms_per_round
        tried = len(self.store.trials(self.run_name))
        proposed: dict[int, Parameterization] = {}
        if round_ == 1:
            for parameters in self.seeds[:count]:
                proposed[self.session.attach(parameters)] = parameters
        if len(proposed) < count:
            proposed |= self.session.next_trials(count - len(proposed), tried=tried + len(proposed))
        if not proposed:
            raise TuningError(f"Ax proposed no configuration for round {round_} of {self.run_name}.")
        trials = [
            TrialRecord(trial_index=index, round=round_, arm=f"trial_{index}", parameters=parameters)
            for index, parameters in sorted(proposed.items())
        ]
        current = RoundRecord(round=round_, status="deployed", phase=None, deployed_at=self.clock())
        self.store.start_round(self.run_name, self.session.state(), current, trials)
        return current

    def _complete(self, round_: int, measured: RoundMeasurements) -> None:
        for index, (measurement, _) in measured.trials.items():
            self.session.complete(index, measurement)
        self.store.complete_round(
            self.run_name,
            self.session.state(),
            round_,
            baseline=measured.baseline,
            baseline_units=measured.baseline_units,
            measured=measured.trials,
            at=self.clock(),
        )

    def finish(self) -> dict[str, Any]:
        recommendation = self.recommendation()
        self.finished(recommendation)
        self.store.set_status(self.run_name, "done", recommendation=recommendation)
        return recommendation

    def recommendation(self) -> dict[str, Any]:
        measured = {t.trial_index: t for t in self.store.trials(self.run_name) if t.measurement}
        if not measured:
            raise TuningError(f"The tuning run {self.run_name} has no measured trial to recommend from.")
        candidates = self.session.recommendations(
            {i: (t.parameters, t.measurement) for i, t in measured.items() if t.measurement}
        )
        return {
            "method": self.method,
            "note": None
            if candidates
            else "No configuration satisfied the constraints: keep the use case's own policy.",
            "configurations": [
                {
                    "trial_index": c.trial_index,
                    "parameters": c.parameters,
                    "policy": self.space.arm_policy(c.parameters).model_dump(exclude_unset=True),
                    "model": self.space.model_overrides(c.parameters),
                    "predicted": c.predicted,
                    "observed": measured[c.trial_index].measurement if c.trial_index in measured else None,
                    "observed_violations": self.space.violations(measured[c.trial_index].measurement or {})
                    if c.trial_index in measured
                    else [],
                }
                for c in candidates
            ],
        }

    # -- what the online and offline tuners do differently ----------------------------------------

    def deployed(self, current: RoundRecord, trials: Sequence[TrialRecord]) -> None:
        """Make the round's arms serve (online); nothing to do offline."""

    def measure(self, current: RoundRecord, trials: Sequence[TrialRecord]) -> RoundMeasurements | Waiting:
        """The round's measurements, or why it cannot be measured yet."""
        raise NotImplementedError

    def finished(self, recommendation: Mapping[str, Any]) -> None:
        """Wind down (stop the experiment, promote); nothing to do offline."""

    def stop(self) -> None:
        self.store.set_status(self.run_name, "stopped")

    def close(self) -> None:
        """Let go of what the tuner holds between steps (the online tuner's log readers)."""

    def run(
        self, *, poll_seconds: float = 30.0, progress: Progress | None = None, max_steps: int | None = None
    ) -> RunRecord:
        """Step until the run is done or stopped, sleeping ``poll_seconds`` while a round fills."""
        say = progress or (lambda _: None)
        steps = 0
        while max_steps is None or steps < max_steps:
            steps += 1
            record = self.record()
            if record is None or record.status != "running":
                break
            done = self.step()
            say(str(done))
            if isinstance(done, Waiting):
                time.sleep(poll_seconds)
        record = self.record()
        assert record is not None
        return record
