"""A tuning run's state in the metadata database (SQLite or PostgreSQL): the Ax experiment's JSON
snapshot, the rounds and their trials with their measurements.

Every change that Ax's state and our rows must agree on — trials generated, trials completed — is
one transaction, and a round is deployed to live traffic only after its trials are committed. A
tuner killed at any point therefore restarts with the trials it had, neither losing a measured
trial nor generating a deployed one twice.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from closedloop.metadata import open_database

from ._run_lock import hold_run

metadata = sa.MetaData()

runs = sa.Table(
    "cl_tuning_runs",
    metadata,
    sa.Column("run", sa.String(128), primary_key=True),
    sa.Column("use_case", sa.String(64), nullable=False),
    sa.Column("mode", sa.String(16), nullable=False),
    sa.Column("method", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("rounds_done", sa.Integer, nullable=False),
    sa.Column("ax_state", sa.Text, nullable=False),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("recommendation", sa.Text),
    sa.Column("note", sa.Text),
)

rounds = sa.Table(
    "cl_tuning_rounds",
    metadata,
    sa.Column("run", sa.String(128), primary_key=True),
    sa.Column("round", sa.Integer, primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("phase", sa.Integer),
    sa.Column("baseline", sa.Text),
    sa.Column("baseline_units", sa.Integer),
    sa.Column("deployed_at", sa.Float, nullable=False),
    sa.Column("measured_at", sa.Float),
)

trials = sa.Table(
    "cl_tuning_trials",
    metadata,
    sa.Column("run", sa.String(128), primary_key=True),
    sa.Column("trial_index", sa.Integer, primary_key=True),
    sa.Column("round", sa.Integer, nullable=False),
    sa.Column("arm", sa.String(64), nullable=False),
    sa.Column("parameters", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("measurement", sa.Text),
    sa.Column("units", sa.Integer),
)


@dataclass
class RunRecord:
    run: str
    use_case: str
    mode: str
    """online or offline"""
    method: str
    """bayesian, random or grid"""
    status: str
    """running, stopped or done"""
    rounds_done: int
    ax_state: str
    started_at: float
    updated_at: float
    recommendation: dict[str, Any] | None = None
    note: str | None = None


@dataclass
class RoundRecord:
    round: int
    status: str
    """deployed (trials generated, arms serving) or measured"""
    phase: int | None
    deployed_at: float
    baseline: dict[str, tuple[float, float]] | None = None
    baseline_units: int | None = None
    measured_at: float | None = None


@dataclass
class TrialRecord:
    trial_index: int
    round: int
    arm: str
    parameters: dict[str, float | int]
    status: str = "running"
    measurement: dict[str, tuple[float, float]] | None = None
    units: int | None = None


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _measurement(text: str | None) -> dict[str, tuple[float, float]] | None:
    if text is None:
        return None
    return {k: (float(v[0]), float(v[1])) for k, v in orjson.loads(text).items()}


class TuningStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        metadata.create_all(engine)

    @classmethod
    def from_url(cls, url: str, *, schema: str | None = None) -> TuningStore:
        return cls(open_database(url, schema=schema))

    def close(self) -> None:
        self.engine.dispose()

    def exclusive(self, run: str) -> contextlib.AbstractContextManager[None]:
        """Hold ``run`` for this process (TuningError while another process holds it)."""
        return hold_run(self.engine, run)

    # -- runs -------------------------------------------------------------------------------------

    def run(self, run: str) -> RunRecord | None:
        with self.engine.connect() as connection:
            row = connection.execute(sa.select(runs).where(runs.c.run == run)).mappings().first()
        if row is None:
            return None
        values = dict(row)
        values["recommendation"] = orjson.loads(row["recommendation"]) if row["recommendation"] else None
        return RunRecord(**values)

    def runs(self) -> list[RunRecord]:
        with self.engine.connect() as connection:
            names = [r[0] for r in connection.execute(sa.select(runs.c.run).order_by(runs.c.run))]
        return [record for name in names if (record := self.run(name)) is not None]

    def create_run(self, record: RunRecord) -> None:
        with self.engine.begin() as connection:
            values = record.__dict__ | {"recommendation": _json(record.recommendation)}
            connection.execute(runs.insert().values(**values))

    def delete_run(self, run: str) -> None:
        with self.engine.begin() as connection:
            for table in (trials, rounds, runs):
                connection.execute(table.delete().where(table.c.run == run))

    def set_status(
        self,
        run: str,
        status: str,
        *,
        recommendation: Mapping[str, Any] | None = None,
        note: str | None = None,
    ) -> None:
        values: dict[str, Any] = {"status": status, "updated_at": time.time()}
        if recommendation is not None:
            values["recommendation"] = _json(dict(recommendation))
        if note is not None:
            values["note"] = note
        with self.engine.begin() as connection:
            connection.execute(runs.update().where(runs.c.run == run).values(**values))

    # -- rounds and trials ------------------------------------------------------------------------

    def start_round(
        self, run: str, ax_state: str, round_: RoundRecord, new_trials: Sequence[TrialRecord]
    ) -> None:
        """Record a round's generated trials together with the Ax state that generated them."""
        with self.engine.begin() as connection:
            connection.execute(
                runs.update().where(runs.c.run == run).values(ax_state=ax_state, updated_at=time.time())
            )
            connection.execute(
                rounds.insert().values(
                    run=run, round=round_.round, status="deployed", phase=None, deployed_at=round_.deployed_at
                )
            )
            for trial in new_trials:
                connection.execute(
                    trials.insert().values(
                        run=run,
                        trial_index=trial.trial_index,
                        round=trial.round,
                        arm=trial.arm,
                        parameters=_json(trial.parameters),
                        status="running",
                    )
                )

    def set_phase(self, run: str, round_: int, phase: int) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                rounds.update().where(rounds.c.run == run, rounds.c.round == round_).values(phase=phase)
            )

    def complete_round(
        self,
        run: str,
        ax_state: str,
        round_: int,
        *,
        baseline: Mapping[str, tuple[float, float]] | None,
        baseline_units: int | None,
        measured: Mapping[int, tuple[Mapping[str, tuple[float, float]], int]],
        at: float,
    ) -> None:
        """Record the round's measurements together with the Ax state that holds them."""
        with self.engine.begin() as connection:
            connection.execute(
                runs.update()
                .where(runs.c.run == run)
                .values(ax_state=ax_state, rounds_done=round_, updated_at=time.time())
            )
            connection.execute(
                rounds.update()
                .where(rounds.c.run == run, rounds.c.round == round_)
                .values(
                    status="measured",
                    baseline=_json(dict(baseline) if baseline else None),
                    baseline_units=baseline_units,
                    measured_at=at,
                )
            )
            for index, (measurement, units) in measured.items():
                connection.execute(
                    trials.update()
                    .where(trials.c.run == run, trials.c.trial_index == index)
                    .values(status="completed", measurement=_json(dict(measurement)), units=units)
                )

    def rounds(self, run: str) -> list[RoundRecord]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(rounds).where(rounds.c.run == run).order_by(rounds.c.round)
            ).mappings()
            return [
                RoundRecord(
                    round=row["round"],
                    status=row["status"],
                    phase=row["phase"],
                    deployed_at=row["deployed_at"],
                    baseline=_measurement(row["baseline"]),
                    baseline_units=row["baseline_units"],
                    measured_at=row["measured_at"],
                )
                for row in rows
            ]

    def trials(self, run: str) -> list[TrialRecord]:
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(trials).where(trials.c.run == run).order_by(trials.c.trial_index)
            ).mappings()
            return [
                TrialRecord(
                    trial_index=row["trial_index"],
                    round=row["round"],
                    arm=row["arm"],
                    parameters=orjson.loads(row["parameters"]),
                    status=row["status"],
                    measurement=_measurement(row["measurement"]),
                    units=row["units"],
                )
                for row in rows
            ]
