"""Why a use case did or did not train: what the trainer waits for, in words and in numbers.

A new user's first question is "why is there no model?": usually decisions wait for their
outcomes' windows to close (plus the trainer's lateness), or fewer final labels exist than the
retrain trigger or the promotion gate needs. `training_status` says which, and when that changes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from closedloop.contracts import Attribution, ClosedLoopConfig

from ._store import ExampleStore


@dataclass(frozen=True)
class OutcomeStatus:
    outcome: str
    final_labels: int
    """Labels of decisions whose window has closed: what training can use."""
    new_since_last_run: int
    needed_for_trigger: int
    """retrain.min_new_examples."""
    window_seconds: float
    first_window_closes_at: float | None
    """When the oldest waiting decision's window (plus lateness) ends: its label becomes final."""
    last_run: str | None
    """The last run's verdict, e.g. "v3-… promoted: …" or "rejected: …"."""


@dataclass(frozen=True)
class TrainingStatus:
    use_case: str
    decisions_waiting: int
    """Decisions logged whose windows have not all closed."""
    due: bool
    outcomes: list[OutcomeStatus] = field(default_factory=list)
    explanation: str = ""


def is_due(config: ClosedLoopConfig, store: ExampleStore, use_case: str, now: float) -> bool:
    """Whether the use case's retrain trigger has fired for any of its outcomes."""
    trigger = config.use_cases[use_case].retrain
    counts = store.label_counts(use_case)
    latest = {run.outcome: run for run in store.runs(use_case)}
    for outcome in config.use_cases[use_case].outcomes:
        previous = latest.get(outcome)
        new = counts.get(outcome, 0) - (previous.labels_seen if previous else 0)
        if new >= trigger.min_new_examples:
            return True
        if trigger.every is not None and new > 0:
            last = previous.finished_at if previous else 0.0
            if now - last >= trigger.every.total_seconds():
                return True
    return False


def training_status(
    config: ClosedLoopConfig,
    store: ExampleStore,
    use_case: str,
    *,
    lateness: float,
    now: float | None = None,
) -> TrainingStatus:
    """Where ``use_case`` stands (read from the trainer's store; nothing is consumed)."""
    at = time.time() if now is None else now
    due = is_due(config, store, use_case, at)
    declared = config.use_cases[use_case]
    waiting, oldest = store.waiting(use_case)
    counts = store.label_counts(use_case)
    latest = {run.outcome: run for run in store.runs(use_case)}
    windows = Attribution.of(declared).windows
    outcomes = []
    for outcome in declared.outcomes:
        previous = latest.get(outcome)
        labels = counts.get(outcome, 0)
        outcomes.append(
            OutcomeStatus(
                outcome=outcome,
                final_labels=labels,
                new_since_last_run=labels - (previous.labels_seen if previous else 0),
                needed_for_trigger=declared.retrain.min_new_examples,
                window_seconds=windows[outcome],
                first_window_closes_at=None if oldest is None else oldest + windows[outcome] + lateness,
                last_run=None
                if previous is None
                else _verdict(previous.version, previous.promoted, previous.reason),
            )
        )
    status = TrainingStatus(use_case, waiting, due, outcomes)
    return TrainingStatus(
        use_case, waiting, due, outcomes, _explain(status, declared.promotion.min_examples, at)
    )


def _verdict(version: str | None, promoted: bool, reason: str) -> str:
    said = "promoted" if promoted else "not promoted"
    return f"{version or 'no model'} {said}: {reason}"


def _explain(status: TrainingStatus, min_examples: int, now: float) -> str:
    if status.due:
        return f"{status.use_case}: due — enough new final labels for the retrain trigger"
    parts = []
    if status.decisions_waiting == 0 and all(o.final_labels == 0 for o in status.outcomes):
        return f"{status.use_case}: no decisions logged yet (decide() through the service or the SDK)"
    for o in status.outcomes:
        short = (
            f"{o.outcome}: {o.final_labels} final labels, {o.new_since_last_run} new "
            f"of the {o.needed_for_trigger} the trigger needs"
        )
        closes = o.first_window_closes_at
        if closes is not None and closes > now:
            short += f"; the next window closes {_in(closes - now)} ({_clock(closes)})"
        parts.append(short)
    waiting = (
        f"{status.decisions_waiting} decisions wait for their outcomes' windows "
        "(plus the trainer's lateness) to close"
        if status.decisions_waiting
        else "no decision waits for a window"
    )
    gate = f"the promotion gate needs {min_examples} held-out rows"
    return f"{status.use_case}: not due — {waiting}; " + "; ".join(parts) + f"; {gate}"


def _in(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"in {hours}h {minutes:02d}m" if hours else f"in {minutes}m {secs:02d}s"


def _clock(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%H:%M:%S UTC")
