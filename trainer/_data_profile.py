"""What a model learned from, and whether the data has moved since (TFX's data validation, in small).

Each training run profiles its training rows per feature: the missing rate, unknown categories,
the numeric range, and a histogram (deciles for numbers, one bin per category, missing values a
bin of their own). The profile and the model's gain importance go into the lineage. A new run
compares the newest rows (the held-out ones) with the champion's profile by the population
stability index, PSI = sum over bins of (new - old) * ln(new / old): under 0.1 is usually read as
stable, over 0.25 as a shift. ``promotion.max_drift`` refuses a model above it.

Quantiles and histograms come from at most `HISTOGRAM_ROWS` rows evenly spread over time (every
k-th row); missing rates, ranges and means from every row. Over 800,000 rows the histograms took
most of a profile's two seconds; from 100,000 rows a decile is off by about a thousandth of the
rows, and sampling noise adds about 0.0001 to a PSI (bins / rows), a thousandth of the 0.1 read
as stable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightgbm as lgb
import numpy as np

from closedloop.policy import FeatureEncoder

DECILES = np.linspace(0.1, 0.9, 9)
HISTOGRAM_ROWS = 100_000
_FLOOR = 1e-4
"""A bin share never counts as below this (an empty bin would make PSI infinite)."""


def profile(features: np.ndarray, encoder: FeatureEncoder, unknown: Mapping[str, int]) -> dict[str, Any]:
    """Per feature (interactions left out): what the rows looked like."""
    categorical = set(encoder.categorical_features)
    stats = _ColumnStats(features[:, : encoder.base_feature_count])
    result: dict[str, Any] = {}
    for column, name in enumerate(encoder.feature_names[: encoder.base_feature_count]):
        values = features[:, column]
        entry: dict[str, Any] = {"missing_rate": stats.missing_rate(column)}
        sample = _sample(values)
        if name in categorical:
            entry["unknown_categories"] = int(unknown.get(name, 0))
            edges: list[float] = np.unique(values[~np.isnan(values)]).tolist()  # every category seen
            entry["histogram"] = {"categories": edges, "shares": _category_shares(sample, edges)}
        else:
            edges = []
            if stats.present[column]:
                present = sample[~np.isnan(sample)]
                if not len(present):  # the few present values fell between the sampled rows
                    present = values[~np.isnan(values)]
                # One partition of the values for every quantile (three took a retrain's seconds).
                p5, *deciles, p95 = np.quantile(present, [0.05, *DECILES, 0.95]).tolist()
                entry.update(
                    min=float(stats.lows[column]),
                    max=float(stats.highs[column]),
                    mean=stats.mean(column),
                    p5=p5,
                    p95=p95,
                )
                edges = sorted(set(deciles))
            entry["histogram"] = {"edges": edges, "shares": _numeric_shares(sample, edges)}
        result[name] = entry
    return result


class _ColumnStats:
    """Every column's count, range and sum of its present values, each in one pass over the rows
    (a column of a row-major matrix at a time strides through all of it: the profile of 800,000
    rows x 30 features took 1.06 s so, 0.36 s with these)."""

    def __init__(self, columns: np.ndarray) -> None:
        self._columns = columns
        self._rows = len(columns)
        self.present = (~np.isnan(columns)).sum(axis=0)
        nothing = np.full(columns.shape[1], np.nan)  # no rows: no range, no sum
        self.lows = np.fmin.reduce(columns, axis=0) if self._rows else nothing  # fmin skips NaN
        self.highs = np.fmax.reduce(columns, axis=0) if self._rows else nothing
        self._sums = np.add.reduce(columns, axis=0) if self._rows else nothing  # NaN: one missing

    def missing_rate(self, column: int) -> float:
        return float(self._rows - self.present[column]) / self._rows if self._rows else 0.0

    def mean(self, column: int) -> float:
        """The mean of the column's present values (it has some)."""
        if self.present[column] == self._rows:
            return float(self._sums[column]) / self._rows
        return float(np.nanmean(self._columns[:, column]))


def drift(features: np.ndarray, encoder: FeatureEncoder, reference: Mapping[str, Any]) -> dict[str, float]:
    """Feature -> PSI of ``features`` against a stored profile (features it lacks are skipped)."""
    scores: dict[str, float] = {}
    for column, name in enumerate(encoder.feature_names[: encoder.base_feature_count]):
        histogram = (reference.get(name) or {}).get("histogram")
        if not histogram:
            continue
        values = _sample(features[:, column])
        if "categories" in histogram:
            new = _category_shares(values, histogram["categories"])
        else:
            new = _numeric_shares(values, histogram["edges"])
        scores[name] = _psi(np.asarray(new), np.asarray(histogram["shares"]))
    return scores


def gain_importance(booster: lgb.Booster) -> dict[str, float]:
    """Feature -> its share of the model's total split gain."""
    gains = np.asarray(booster.feature_importance(importance_type="gain"), dtype=float)
    total = gains.sum()
    shares = gains / total if total > 0 else gains
    return {name: round(float(share), 6) for name, share in zip(booster.feature_name(), shares, strict=True)}


def _sample(values: np.ndarray) -> np.ndarray:
    """At most `HISTOGRAM_ROWS` of the values, evenly spread (a view: nothing is copied)."""
    return values[:: math.ceil(len(values) / HISTOGRAM_ROWS)] if len(values) > HISTOGRAM_ROWS else values


def _numeric_shares(values: np.ndarray, edges: list[float]) -> list[float]:
    """Shares of the bins cut at ``edges``, and the missing values' share last."""
    if not len(values):
        return [0.0] * (len(edges) + 2)
    missing = np.isnan(values)
    bins = np.searchsorted(np.asarray(edges), values[~missing], side="right")
    counts = np.bincount(bins, minlength=len(edges) + 1).astype(float)
    return [*(counts / len(values)).tolist(), float(missing.mean())]


def _category_shares(values: np.ndarray, categories: list[float]) -> list[float]:
    """Shares of each category code, of any other (a code unseen then), and of missing values."""
    if not len(values):
        return [0.0] * (len(categories) + 2)
    missing = np.isnan(values)
    known = np.isin(values, categories)
    shares = [float(np.mean(values == code)) for code in categories]
    return [*shares, float(np.mean(~known & ~missing)), float(missing.mean())]


def _psi(new: np.ndarray, old: np.ndarray) -> float:
    if new.shape != old.shape or not len(new):
        return 0.0
    p, q = np.maximum(new, _FLOOR), np.maximum(old, _FLOOR)
    return round(float(np.sum((p - q) * np.log(p / q))), 6)
