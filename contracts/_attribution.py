"""The attribution rule: which reported outcome counts for which decision.

A report of outcome ``o`` for decision ``d`` counts if it happened no later than ``o``'s window
after ``d`` was made (``happened - decided <= window``), and only the first report of ``(d, o)``
in log order counts. When the window closes without a counting report, the outcome takes its
default. The trainer's join and the evaluator's join both decide with this class (on one report,
or on arrays of them), and a test runs both on the same events and demands the same labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from ._config import UseCaseConfig

Seconds = TypeVar("Seconds")  # a float, or a numpy array of them (the rule is elementwise)


@dataclass(frozen=True)
class Attribution:
    """One use case's windows (seconds) and defaults, per outcome in declaration order."""

    windows: dict[str, float]
    defaults: dict[str, float]

    @classmethod
    def of(cls, use_case: UseCaseConfig) -> Attribution:
        return cls(
            windows={name: o.window.total_seconds() for name, o in use_case.outcomes.items()},
            defaults={name: o.default for name, o in use_case.outcomes.items()},
        )

    @staticmethod
    def counts(delay: Seconds, window: Seconds) -> Seconds:
        """Whether a report ``delay`` seconds after its decision is inside ``window``."""
        return delay <= window  # type: ignore[operator, no-any-return]

    @property
    def longest_window(self) -> float:
        """Seconds after a decision when every one of its outcomes is final."""
        return max(self.windows.values())
