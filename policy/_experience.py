"""What exploration scales with: how much the serving models have learned from, and the unit in
which the value function's gaps are measured.

SquareCB's exploration rate shrinks as ``gamma = gamma_scale * examples ** gamma_exponent`` grows
(Foster & Rakhlin 2020; VW's ``--squarecb`` counts examples the same way), and its gaps, like a
softmax temperature, are meaningful only in a known unit. VW assumes costs in [0, 1]; a value
function here can be ``click + 0.1 * revenue`` with revenue in dollars. So gaps are divided by the
value function's spread: its range over the corners of its outcomes' ranges (binary: 0 to 1;
continuous: the declared ``min``/``max``, else the 5th to 95th percentile of the training labels the
trainer records). A value function of binary outcomes keeps VW's unit exactly.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from closedloop.contracts import OutcomeConfig, UseCaseConfig, ValueExpression

OutcomeRange = tuple[float, float]
MAX_CORNER_OUTCOMES = 10
"""Beyond this many outcomes in one value function, the spread is taken on random points of the box."""


@dataclass(frozen=True)
class Experience:
    examples: int = 0
    """Labelled examples the serving models were trained on (the fewest of the value's outcomes)."""
    outcome_ranges: Mapping[str, OutcomeRange] = field(default_factory=dict)
    """Outcome -> the range its values take, for `value_scale`."""
    _scales: dict[str, float] = field(default_factory=dict, compare=False, repr=False)
    """value function source -> its scale: computed once, read on every decision."""

    @classmethod
    def of(cls, use_case: UseCaseConfig, metadata: Mapping[str, Mapping[str, Any]]) -> Experience:
        """From the serving models' registry metadata (outcome -> metadata); an outcome without
        a model counts no examples."""
        rows = [_rows(metadata.get(outcome)) for outcome in use_case.policy.value_expression.names]
        ranges = {
            name: outcome_range(outcome, metadata.get(name)) for name, outcome in use_case.outcomes.items()
        }
        return cls(examples=min(rows, default=0), outcome_ranges=ranges)

    def value_scale(self, expression: ValueExpression) -> float:
        """The unit of a value gap for ``expression`` (1.0 when it cannot be told)."""
        scale = self._scales.get(expression.source)
        if scale is None:
            ranges = {n: self.outcome_ranges.get(n, (0.0, 1.0)) for n in sorted(expression.names)}
            scale = self._scales[expression.source] = _spread(expression, ranges)
        return scale


def outcome_range(outcome: OutcomeConfig, metadata: Mapping[str, Any] | None) -> OutcomeRange:
    if outcome.type == "binary":
        return (0.0, 1.0)
    if outcome.min is not None and outcome.max is not None:
        return (outcome.min, outcome.max)
    observed = (metadata or {}).get("label_range")
    if observed and len(observed) == 2 and observed[1] > observed[0]:
        return (float(observed[0]), float(observed[1]))
    return (0.0, 1.0)


def _rows(metadata: Mapping[str, Any] | None) -> int:
    lineage = (metadata or {}).get("lineage") or {}
    return int(lineage.get("rows_train", 0)) + int(lineage.get("rows_holdout", 0))


def _spread(expression: ValueExpression, ranges: Mapping[str, OutcomeRange]) -> float:
    if not ranges:
        return 1.0
    names = list(ranges)
    if len(names) <= MAX_CORNER_OUTCOMES:
        corners = np.array(list(itertools.product(*ranges.values())), dtype=float)
    else:
        rng = np.random.default_rng(0)
        low = np.array([bounds[0] for bounds in ranges.values()])
        high = np.array([bounds[1] for bounds in ranges.values()])
        corners = low + rng.random((4096, len(names))) * (high - low)
    with np.errstate(all="ignore"):
        values = np.broadcast_to(
            np.asarray(expression.evaluate({n: corners[:, i] for i, n in enumerate(names)}), dtype=float),
            len(corners),
        )
    spread = float(np.max(values) - np.min(values)) if np.all(np.isfinite(values)) else math.nan
    return spread if math.isfinite(spread) and spread > 0 else 1.0
