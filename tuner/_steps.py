"""What one step of a tuning run did: typed, so callers branch on the state, not on its wording.

``str()`` of each is the line the progress log shows.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Inactive:
    """The run is not running (not started, finished, or stopped); nothing was done."""

    status: str

    def __str__(self) -> str:
        return f"run is {self.status}"


@dataclass(frozen=True)
class Deployed:
    """A new round's trials were proposed, committed and put into service."""

    round: int

    def __str__(self) -> str:
        return f"deployed round {self.round}"


@dataclass(frozen=True)
class Waiting:
    """The current round cannot be measured yet, and why."""

    reason: str

    def __str__(self) -> str:
        return f"waiting: {self.reason}"


@dataclass(frozen=True)
class Measured:
    """The current round was measured and completed in Ax."""

    round: int

    def __str__(self) -> str:
        return f"measured round {self.round}"


@dataclass(frozen=True)
class Finished:
    """Every round was measured; the recommendation is made."""

    def __str__(self) -> str:
        return "finished"


StepResult = Inactive | Deployed | Waiting | Measured | Finished
