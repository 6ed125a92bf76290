"""Heterogeneous effects: per-segment breakdowns and a cross-fitted DR-learner on LightGBM.

The DR-learner (Kennedy, 2020) turns each unit into a doubly robust pseudo-outcome
``psi = mu1(x) - mu0(x) + T (y - mu1(x)) / e - (1 - T) (y - mu0(x)) / (1 - e)`` whose mean over
any group of units is an unbiased estimate of that group's effect, with an interval from its
spread. Outcome models are fitted on one half of the units and applied to the other (cross-fitting),
so a unit's own outcome never shapes its own prediction. The effect model sorts units into fifths
by predicted effect (sorted group effects, as in Chernozhukov et al., 2018).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np
from scipy import stats

from ._stats import Z, adjust_p_values

_MIN_LEAF = 50
_PARAMS: dict[str, float | int | str] = {
    "objective": "regression",
    "num_leaves": 15,
    "learning_rate": 0.05,
    "min_data_in_leaf": _MIN_LEAF,
    "verbose": -1,
    "num_threads": 2,
    "seed": 7,
}
_TREES = 100
GROUPS = 5
MAX_UNITS = 200_000


@dataclass(frozen=True)
class GroupEffect:
    label: str
    units: int
    estimate: float
    low: float
    high: float
    p_value: float


def _fit_predict(x_fit: np.ndarray, y_fit: np.ndarray, x_new: np.ndarray) -> np.ndarray:
    if len(y_fit) < 2 * _MIN_LEAF:
        return np.full(len(x_new), float(np.mean(y_fit)) if len(y_fit) else 0.0)
    booster = lgb.train(_PARAMS, lgb.Dataset(x_fit, y_fit), num_boost_round=_TREES)
    return np.asarray(booster.predict(x_new))


def dr_pseudo_outcomes(
    features: np.ndarray, outcome: np.ndarray, treated: np.ndarray, folds: np.ndarray
) -> np.ndarray:
    """One pseudo-outcome per unit, with outcome models cross-fitted over two folds."""
    e = float(treated.mean())
    mu0 = np.empty(len(outcome))
    mu1 = np.empty(len(outcome))
    for fold in (0, 1):
        fit, apply = folds != fold, folds == fold
        mu0[apply] = _fit_predict(features[fit & ~treated], outcome[fit & ~treated], features[apply])
        mu1[apply] = _fit_predict(features[fit & treated], outcome[fit & treated], features[apply])
    residual = np.where(treated, (outcome - mu1) / e, -(outcome - mu0) / (1 - e))
    return np.asarray(mu1 - mu0 + residual)


def predicted_effects(features: np.ndarray, pseudo: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """The DR-learner's second stage: the effect as a function of the features, cross-fitted."""
    effect = np.empty(len(pseudo))
    for fold in (0, 1):
        fit, apply = folds != fold, folds == fold
        effect[apply] = _fit_predict(features[fit], pseudo[fit], features[apply])
    return effect


def group_effect(label: str, pseudo: np.ndarray) -> GroupEffect:
    n = len(pseudo)
    mean = float(np.mean(pseudo)) if n else math.nan
    se = float(np.std(pseudo, ddof=1)) / math.sqrt(n) if n > 1 else math.nan
    p = float(2 * stats.norm.sf(abs(mean / se))) if se and math.isfinite(se) and se > 0 else math.nan
    return GroupEffect(label, n, mean, mean - Z * se, mean + Z * se, p)


def sorted_groups(effect: np.ndarray, pseudo: np.ndarray) -> list[GroupEffect]:
    """Units in fifths by predicted effect, each with its doubly robust effect and interval."""
    if len(effect) < GROUPS * 20:
        return []
    edges = np.quantile(effect, np.linspace(0, 1, GROUPS + 1)[1:-1])
    group = np.searchsorted(edges, effect, side="right")
    return [group_effect(str(g + 1), pseudo[group == g]) for g in range(GROUPS)]


def gains_and_losses(
    segments: list[GroupEffect], *, correction: str, higher_is_better: bool
) -> tuple[list[str], list[str]]:
    """Segments whose effect is clearly good or clearly bad, after correcting for how many were
    looked at (so that some segment always looking significant by chance is not reported)."""
    adjusted = adjust_p_values([s.p_value for s in segments], correction)
    gains: list[str] = []
    losses: list[str] = []
    for segment, p in zip(segments, adjusted, strict=True):
        if not (math.isfinite(p) and p < 1 - 0.95 + 1e-12):
            continue
        good = segment.estimate > 0 if higher_is_better else segment.estimate < 0
        (gains if good else losses).append(segment.label)
    return gains, losses
