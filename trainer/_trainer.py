"""The trainer: consume events, join outcomes, close windows, retrain on the trigger, gate, publish.

Each step is a method so that the CLI's long-running mode, ``train --once``, the demo and the tests
drive the same code. Outcome windows are closed only after the source has been read to its end,
so a trainer catching up on a backlog never gives a default to a decision whose feedback is
still further down the log.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import lightgbm as lgb
import numpy as np

from closedloop.contracts import Attribution, ClosedLoopConfig
from closedloop.metadata import ProcessLock
from closedloop.policy import FeatureEncoder
from closedloop.registry import ModelRegistry, version_metadata

from ._dask_engine import DaskEngine
from ._data_profile import drift, gain_importance, profile
from ._gate import GateDecision, gate
from ._join import Joiner, PreparedBatch
from ._offpolicy_gate import off_policy_check
from ._preparing import BatchPreparer, Prepared
from ._sources import EventBatch, EventSource
from ._status import TrainingStatus, is_due, training_status
from ._store import ExampleStore, OffsetsMoved, TrainingRun
from ._training import (
    LOCAL,
    Dataset,
    FitEngine,
    constant_predictions,
    evaluate,
    fit,
    fit_to_judge,
    lightgbm_params,
)
from ._training_rows import ReadRows, TrainingRows

logger = logging.getLogger(__name__)
LEADER_LOCK = "trainer-leader"
"""Of the trainers sharing a database, the one holding this lock closes windows and trains."""


def _drift_gate(decision: GateDecision, psi: dict[str, float], bound: float | None) -> GateDecision:
    """Refuse (adding the reason) when a feature drifted past ``bound``."""
    over = {name: score for name, score in psi.items() if bound is not None and score > bound}
    if not over:
        return decision
    reasons = [
        f"data drift: PSI of {name} is {score:.3f} > max_drift {bound}" for name, score in over.items()
    ]
    kept = decision.reasons if not decision.passed else []
    return GateDecision(False, kept + reasons, decision.comparisons)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat()


class _Laps:
    """How long each step of a retrain took, for its report: where a retrain's time goes."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._since = time.perf_counter()

    def done(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step] = round(now - self._since, 3)
        self._since = now


@dataclass
class CycleReport:
    """What one `Trainer.run_once` did."""

    consumed: Counter[str] = field(default_factory=Counter)
    defaults_applied: int = 0
    runs: list[TrainingRun] = field(default_factory=list)
    leader: bool = True
    """False: another trainer holds the leader lock and closes windows and trains; this one only
    joined the events of its partitions."""

    @property
    def promoted(self) -> list[TrainingRun]:
        return [run for run in self.runs if run.promoted]


@dataclass(frozen=True)
class _Verdict:
    """What the promotion gate found, as the lineage records it."""

    decision: GateDecision
    compared_with: str
    metrics: dict[str, float]
    champion_metrics: dict[str, float] | None
    baseline_metrics: dict[str, float]
    off_policy: dict[str, Any] | None
    drift_psi: dict[str, float]
    parent: str | None

    def report(self) -> dict[str, Any]:
        return {
            "metrics": self.metrics,
            "champion_metrics": self.champion_metrics,
            "baseline_metrics": self.baseline_metrics,
            "gate": {
                "passed": self.decision.passed,
                "compared_with": self.compared_with,
                "reasons": self.decision.reasons,
                "paired_loss_differences": self.decision.comparisons,
                "off_policy": self.off_policy,
            },
            "drift_psi": self.drift_psi,
        }


class Trainer:
    def __init__(
        self,
        config: ClosedLoopConfig,
        *,
        store: ExampleStore,
        source: EventSource,
        registry: ModelRegistry,
        clock: Callable[[], float] = time.time,
        lateness: float = 60.0,
        max_training_rows: int = 1_000_000,
        seed: int = 0,
        progress: Callable[[str], None] | None = None,
        prepare_in_worker: bool = True,
    ) -> None:
        """``prepare_in_worker``: prepare large batches in a worker process while the previous
        one is stored (`BatchPreparer`)."""
        self.config = config
        self.store = store
        self.source = source
        self.registry = registry
        self.lateness = lateness
        """Seconds a window stays open past its end for events still on their way."""
        self.max_training_rows = max_training_rows
        self._rows = TrainingRows(store, limit=max_training_rows)
        self._clock = clock
        self._seed = seed
        self._progress = progress or (lambda message: logger.info("%s", message))
        self._encoders = {name: FeatureEncoder(uc) for name, uc in config.use_cases.items()}
        self._joiner = Joiner(config, self._encoders)
        self._preparer = BatchPreparer(config, self._joiner, worker=prepare_in_worker)
        self.caught_up = False
        """Whether the last `catch_up` read the source to its end."""
        self._leader: ProcessLock | None = None
        self._dask = DaskEngine(config.trainer) if config.trainer.engine == "dask" else None
        self._engine: FitEngine = self._dask or LOCAL
        self.source.seek(store.offsets(source.name))

    # -- consuming --------------------------------------------------------------------------------

    def consume(self, *, max_records: int = 5000, timeout: float = 0.0) -> Counter[str]:
        """Read and store one batch; its offsets are committed in the same transaction."""
        batch = self.source.poll(max_records, timeout)
        if not batch:
            return Counter()
        return self._store_batch(batch, self._joiner.prepare(*batch.records())) or Counter()

    def _store_batch(self, batch: EventBatch, prepared: PreparedBatch) -> Counter[str] | None:
        """Store a prepared batch; None if another trainer stored it (the source then reads on
        from the stored offsets)."""
        try:
            with self.store.transaction() as connection:
                counts = self._joiner.store(connection, prepared)
                ExampleStore.move_offsets(connection, self.source.name, batch.starts, batch.positions)
                ExampleStore.add_to_counters(connection, counts)
        except OffsetsMoved as moved:
            logger.info("%s: another trainer stored this batch; reading on from the stored offsets", moved)
            self.source.seek(self.store.offsets(self.source.name))
            return None
        self.source.committed(batch.positions)
        return counts

    def catch_up(
        self, *, timeout: float = 0.5, max_records: int = 5000, patience: float = 60.0
    ) -> Counter[str]:
        """Consume until the source is read to its end; sets ``caught_up``.

        ``timeout``: how long one poll waits for new events; ``patience``: how long to keep polling
        a source that has not yet shown its end (a consumer still joining its group). Each batch
        is read, and begins to be prepared, before the one before it is stored.
        """
        total: Counter[str] = Counter()
        deadline = time.monotonic() + patience
        ahead: tuple[EventBatch, Prepared] | None = None
        while True:
            batch = self.source.poll(max_records, timeout)
            following = (batch, self._preparer.start(batch)) if batch else None
            moved = False
            if ahead is not None:
                previous, prepared = ahead
                counts = self._store_batch(previous, prepared())
                moved = counts is None
                total.update(counts or Counter())
            # Moved: the source went back to the stored offsets, so what it read ahead, and
            # whether it was at the end, no longer hold.
            ahead = None if moved else following
            if batch or moved:
                continue
            self.caught_up = batch.at_end
            if batch.at_end or time.monotonic() > deadline:
                self._preparer.release()  # caught up: batches are small again
                return total

    def close_windows(self) -> int:
        """Apply outcome defaults to every decision whose window (plus lateness) has ended."""
        now = self._clock() - self.lateness
        applied = 0
        with self.store.transaction() as connection:
            windows: dict[str, float] = {}
            for name, use_case in self.config.use_cases.items():
                attribution = Attribution.of(use_case)
                applied += ExampleStore.close_windows(connection, name, attribution, now)
                for outcome, window in attribution.windows.items():
                    windows[outcome] = max(window, windows.get(outcome, 0.0))
            # Reports still waiting for a decision past their window can never count: expired.
            expired = ExampleStore.expire_pending(connection, windows, now)
            ExampleStore.add_to_counters(
                connection, {"defaults_applied": applied, "pending_expired": expired}
            )
        return applied

    # -- training ---------------------------------------------------------------------------------

    def due(self, use_case: str) -> bool:
        """Whether the use case's retrain trigger has fired for any of its outcomes."""
        return is_due(self.config, self.store, use_case, self._clock())

    def status(self, use_case: str) -> TrainingStatus:
        """Why the use case is or is not due, and what it waits for."""
        return training_status(self.config, self.store, use_case, lateness=self.lateness, now=self._clock())

    def run_once(self, *, force: bool = False, timeout: float = 0.5) -> CycleReport:
        """Catch up on the log, close windows, and retrain every use case whose trigger fired.

        Several trainers in one consumer group each join the partitions the group gives them;
        only the one holding the leader lock closes windows and trains (on every partition's
        examples, all in the shared database)."""
        report = CycleReport(consumed=self.catch_up(timeout=timeout))
        if not self._lead():
            report.leader = False
            return report
        # Else feedback for an ending window may still be unread (by us or another trainer).
        if self.caught_up and self.source.read_to_end(self.store.offsets(self.source.name)):
            report.defaults_applied = self.close_windows()
        for name in self.config.use_cases:
            if force or self.due(name):
                report.runs.extend(self.train(name))
        return report

    def train(self, use_case: str) -> list[TrainingRun]:
        """Train, evaluate and gate a model for each outcome of the use case; publish the results."""
        counts = self.store.label_counts(use_case)
        return [
            self._train_outcome(use_case, outcome, counts.get(outcome, 0))
            for outcome in self.config.use_cases[use_case].outcomes
        ]

    def _train_outcome(self, name: str, outcome_name: str, labels_seen: int) -> TrainingRun:
        started = self._clock()
        use_case = self.config.use_cases[name]
        outcome = use_case.outcomes[outcome_name]
        rules = use_case.promotion
        encoder = self._encoders[name]
        laps = _Laps()
        read = self._rows.read(name, outcome_name, encoder)
        laps.done("read")
        everything, unknown = read.data, read.unknown
        held_out = round(len(everything) * rules.holdout_fraction)
        if held_out < rules.min_examples:
            reason = (
                f"{len(everything)} labelled examples give {held_out} held out; the gate needs "
                f"min_examples={rules.min_examples} (holdout_fraction={rules.holdout_fraction})"
            )
            return self._record(
                name, outcome_name, started, labels_seen, None, False, reason, {"rows": len(everything)}
            )
        how = f"{read.read} new rows read" if read.incremental else f"all {read.read} rows read"
        self._progress(
            f"training {name}/{outcome_name} on {len(everything) - held_out} rows, "
            f"{held_out} held out ({how})"
        )
        train, holdout = everything.split_by_time(rules.holdout_fraction)
        params = lightgbm_params(use_case, outcome, self._seed)
        label_range = [float(q) for q in np.percentile(train.labels, [5, 95])]
        booster, learned = fit_to_judge(
            train,
            encoder,
            params,
            use_case.model.num_trees,
            max_trees=use_case.model.max_trees,
            engine=self._engine,
        )
        laps.done("fit")
        verdict = self._judge(name, outcome_name, booster, train, holdout, label_range)
        laps.done("judge")
        judged_trees = booster.num_trees()
        if verdict.decision.passed:
            # The gate judged a model of the earlier rows; the one published learns the held-out
            # (latest) rows too, with as many trees: the most recent data is the most telling.
            booster = fit(everything, encoder, params, judged_trees, engine=self._engine)
        laps.done("refit")
        report: dict[str, Any] = {
            **verdict.report(),
            "params": {**params, "num_trees": judged_trees},
            "data_profile": profile(train.features, encoder, unknown),
            "gain_importance": gain_importance(booster),
            "lineage": self._lineage(train, holdout, read, verdict, judged_rows=learned),
        }
        laps.done("profile")
        # read: the rows read and encoded; fit: the model judged; judge: the gate; refit: the
        # published model on every row (none when refused); profile: data profile, importance
        report["seconds"] = laps.seconds
        decision = verdict.decision
        pinned = self.registry.pinned(name, outcome_name) if decision.passed else None
        promote = decision.passed and pinned is None
        status = "champion" if promote else ("held" if decision.passed else "rejected")
        summary = decision.summary
        if pinned is not None:
            summary += (
                f"; not promoted: {pinned} is pinned by an operator "
                f"(closedloop models unpin {name} {outcome_name})"
            )
        published = self.registry.publish(
            name,
            outcome_name,
            str(booster.model_to_string()),
            {
                **report,
                "status": status,
                "feature_names": list(encoder.feature_names),
                "objective": params["objective"],
                "label_range": label_range,  # the unit of exploration's value gaps (policy.Experience)
            },
            champion=promote,
        )
        said = {"champion": "promoted", "held": "held", "rejected": "rejected"}[status]
        self._progress(f"{name}/{outcome_name} {published.version} {said}: {summary}")
        return self._record(
            name, outcome_name, started, labels_seen, published.version, promote, summary, report
        )

    def _judge(
        self,
        name: str,
        outcome_name: str,
        booster: lgb.Booster,
        train: Dataset,
        holdout: Dataset,
        label_range: list[float],
    ) -> _Verdict:
        """The promotion gate on the held-out rows: against the constant and the champion (on the
        rows it did not learn), then the drift bound and, if configured, the off-policy check."""
        use_case = self.config.use_cases[name]
        outcome, rules, encoder = use_case.outcomes[outcome_name], use_case.promotion, self._encoders[name]
        predicted = np.asarray(booster.predict(holdout.features))
        constant = constant_predictions(train.labels, len(holdout))
        parent = self.registry.champion(name, outcome_name)
        parent_metadata = dict(version_metadata(self.registry, name, outcome_name, parent)) if parent else {}
        champion_predicted = self._champion_predictions(
            name, outcome_name, parent, parent_metadata, encoder, holdout
        )
        unseen = ~np.isnan(champion_predicted) if champion_predicted is not None else None
        champion = (
            evaluate(champion_predicted[unseen], holdout.labels[unseen], outcome)
            if champion_predicted is not None and unseen is not None and unseen.sum() > 1
            else None
        )
        reference_name = f"champion {parent}" if champion is not None else "constant baseline"
        decision = gate(
            holdout.labels,
            predicted,
            constant=constant,
            champion=(reference_name, champion_predicted) if champion_predicted is not None else None,
            outcome=outcome,
            rules=rules,
        )
        drifted = drift(holdout.features, encoder, parent_metadata.get("data_profile") or {})
        decision = _drift_gate(decision, drifted, rules.max_drift)
        off_policy: dict[str, Any] | None = None
        if rules.off_policy_check and decision.passed:
            failed, off_policy = off_policy_check(
                self.config,
                self.registry,
                name,
                outcome_name,
                booster,
                since=float(holdout.decided_at[0]),
                as_of=self._clock(),
                challenger_metadata={
                    "lineage": {"rows_train": len(train), "rows_holdout": len(holdout)},
                    "label_range": label_range,
                },
            )
            decision = failed or decision
        return _Verdict(
            decision=decision,
            compared_with=reference_name,
            metrics=evaluate(predicted, holdout.labels, outcome),
            champion_metrics=champion,
            baseline_metrics=evaluate(constant, holdout.labels, outcome),
            off_policy=off_policy,
            drift_psi=drifted,
            parent=parent,
        )

    def _lineage(
        self, train: Dataset, holdout: Dataset, read: ReadRows, verdict: _Verdict, *, judged_rows: int
    ) -> dict[str, Any]:
        """Where the model's data came from: its time span, rows, parent and source offsets."""
        return {
            "data_from": _iso(float(train.decided_at[0])),
            "data_to": _iso(float(holdout.decided_at[-1])),
            "holdout_from": _iso(float(holdout.decided_at[0])),
            "rows_train": len(train),
            "rows_holdout": len(holdout),
            "rows_judged_model": judged_rows,  # the earliest training rows the judged model learned
            "refit_on_all_rows": verdict.decision.passed,
            "rows_read": read.read,
            "incremental_read": read.incremental,
            "parent_version": verdict.parent,
            "source": self.source.name,
            "offsets": {f"{t}/{p}": o for (t, p), o in sorted(self.store.offsets(self.source.name).items())},
            "fitted_on": self._dask.describe() if self._dask is not None else {"engine": "local"},
        }

    def _champion_predictions(
        self,
        name: str,
        outcome_name: str,
        version: str | None,
        metadata: dict[str, Any],
        encoder: FeatureEncoder,
        holdout: Dataset,
    ) -> np.ndarray | None:
        """The champion's predictions on the held-out rows (None without a usable champion); NaN
        for the rows it was trained on (a published model learned the held-out rows of its own
        gate, which may still be held out now): judged on those it would flatter the champion."""
        if version is None:
            return None
        try:
            booster = lgb.Booster(model_str=self.registry.model_text(name, outcome_name, version))
        except (KeyError, lgb.basic.LightGBMError) as exc:
            logger.warning("cannot load champion %s/%s/%s: %s", name, outcome_name, version, exc)
            return None
        columns = encoder.leading_columns(booster.feature_name())
        if columns is None:
            return None  # trained before the use case's features changed: compare with the baseline
        predicted = np.asarray(booster.predict(holdout.features[:, :columns]), dtype=float)
        lineage = metadata.get("lineage") or {}
        if lineage.get("refit_on_all_rows") and lineage.get("data_to"):
            seen_until = datetime.fromisoformat(lineage["data_to"]).timestamp()
            predicted[holdout.decided_at <= seen_until] = np.nan
        return predicted

    def _record(
        self,
        use_case: str,
        outcome: str,
        started: float,
        labels_seen: int,
        version: str | None,
        promoted: bool,
        reason: str,
        report: dict[str, Any],
    ) -> TrainingRun:
        run = TrainingRun(
            0, use_case, outcome, started, self._clock(), labels_seen, promoted, version, reason, report
        )
        run_id = self.store.record_run(run)
        return replace(run, run_id=run_id)

    def _lead(self) -> bool:
        """Whether this trainer leads: it takes the lock when no living trainer holds it."""
        if self._leader is None:
            self._leader = ProcessLock.try_take(self.store.engine, LEADER_LOCK)
            if self._leader is not None:
                logger.info("this trainer leads: it closes windows and trains")
        return self._leader is not None

    def close(self) -> None:
        self._preparer.release()
        if self._dask is not None:
            self._dask.close()
        if self._leader is not None:
            self._leader.release()
            self._leader = None
        self.source.close()
        self.store.close()
        self.registry.close()
