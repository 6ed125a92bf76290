"""Small real LightGBM models for tests: trained in milliseconds on data with a known pattern."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np


def train_model_text(
    feature_names: list[str],
    *,
    objective: str = "binary",
    rows: int = 400,
    trees: int = 10,
    seed: int = 0,
    weight_of_first: float = 2.0,
) -> str:
    """A model whose prediction rises with the first feature (its label depends on it)."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(rows, len(feature_names)))
    signal = weight_of_first * features[:, 0]
    if objective == "binary":
        labels = (rng.random(rows) < 1 / (1 + np.exp(-signal))).astype(float)
    else:
        labels = signal + rng.normal(scale=0.1, size=rows)
    dataset = lgb.Dataset(features, labels, feature_name=feature_names, free_raw_data=False)
    params = {"objective": objective, "num_leaves": 7, "min_data_in_leaf": 5, "verbose": -1, "seed": seed}
    booster = lgb.train(params, dataset, num_boost_round=trees)
    return str(booster.model_to_string())
