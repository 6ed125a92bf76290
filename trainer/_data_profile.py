"""What a model learned from, and whether the data has moved since (TFX's data validation, in small).

Each training run profiles its training rows per feature: the missing rate, unknown categories,
the numeric range, and a histogram (deciles for numbers, one bin per category, missing values a
bin of their own). The profile and the model's gain importance go into the lineage. A new run
compares the newest rows (the held-out ones) with the champion's profile by the population
stability index, PSI = sum over bins of (new - old) * ln(new / old): under 0.1 is usually read as
stable, over 0.25 as a shift. ``promotion.max_drift`` refuses a model above it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightgbm as lgb
import numpy as np

from closedloop.policy import FeatureEncoder

DECILES = np.linspace(0.1, 0.9, 9)
_FLOOR = 1e-4
"""A bin share never counts as below this (an empty bin would make PSI infinite)."""


def profile(features: np.ndarray, encoder: FeatureEncoder, unknown: Mapping[str, int]) -> dict[str, Any]:
    """Per feature (interactions left out): what the rows looked like."""
    categorical = set(encoder.categorical_features)
    result: dict[str, Any] = {}
    for column, name in enumerate(encoder.feature_names[: encoder.base_feature_count]):
        values = features[:, column]
        missing = np.isnan(values)
        present = values[~missing]
        entry: dict[str, Any] = {"missing_rate": float(missing.mean()) if len(values) else 0.0}
        if name in categorical:
            entry["unknown_categories"] = int(unknown.get(name, 0))
            edges: list[float] = sorted({float(v) for v in present})
            entry["histogram"] = {"categories": edges, "shares": _category_shares(values, edges)}
        else:
            edges = []
            if len(present):
                # One partition of the values for every quantile (three took a retrain's seconds).
                p5, *deciles, p95 = np.quantile(present, [0.05, *DECILES, 0.95]).tolist()
                entry.update(
                    min=float(present.min()),
                    max=float(present.max()),
                    mean=float(present.mean()),
                    p5=p5,
                    p95=p95,
                )
                edges = sorted(set(deciles))
            entry["histogram"] = {"edges": edges, "shares": _numeric_shares(values, edges)}
        result[name] = entry
    return result


def drift(features: np.ndarray, encoder: FeatureEncoder, reference: Mapping[str, Any]) -> dict[str, float]:
    """Feature -> PSI of ``features`` against a stored profile (features it lacks are skipped)."""
    scores: dict[str, float] = {}
    for column, name in enumerate(encoder.feature_names[: encoder.base_feature_count]):
        histogram = (reference.get(name) or {}).get("histogram")
        if not histogram:
            continue
        values = features[:, column]
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
