"""The default policy: what serves before a use case has models, and in a holdout arm."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import numpy as np

from closedloop.contracts import FeatureValue, UseCaseConfig


def default_values(count: int, preference: np.ndarray | None) -> np.ndarray:
    """Values the default policy gives: 1 for its favourite down to 0, by rank.

    Values by rank keep a softmax temperature meaningful before any model exists.
    """
    if count == 1:
        return np.ones(1)
    by_rank = _by_rank(count)
    if preference is None:
        return by_rank.copy()
    values = np.empty(count)
    values[np.argsort(-preference, kind="stable")] = by_rank
    return values


@functools.lru_cache(maxsize=64)
def _by_rank(count: int) -> np.ndarray:
    """1 down to 0 in ``count`` steps, made once per count (``np.linspace`` was a tenth of an
    off-policy evaluation, which asks for it once per decision and policy)."""
    values = np.linspace(1.0, 0.0, count)
    values.flags.writeable = False
    return values


def default_policy_values(
    use_case: UseCaseConfig, candidates: Sequence[Mapping[str, FeatureValue]]
) -> np.ndarray:
    """The default policy's values: by the use case's order, or its yes/no answer for binary."""
    default = use_case.policy.default
    if use_case.decision == "binary":
        return np.array([0.0, 1.0]) if default.action == "yes" else np.array([1.0, 0.0])
    preference = None
    if default.order == "feature" and default.feature:
        sign = 1.0 if default.descending else -1.0
        preference = np.array([sign * float(c[default.feature] or 0.0) for c in candidates])
    return default_values(len(candidates), preference)
