"""A training run's data profile over more rows than its histograms read (`trainer._data_profile`):
missing rates, ranges and means from every row; deciles and histogram shares from rows spread
evenly over the data, close to those of every row."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import make_config

from closedloop.policy import FeatureEncoder
from closedloop.trainer._data_profile import DECILES, HISTOGRAM_ROWS, drift, profile

ROWS = 3 * HISTOGRAM_ROWS + 7


def _encoder(tmp_path: Path) -> FeatureEncoder:
    return FeatureEncoder(make_config(tmp_path).use_cases["feed"])  # numeric and categorical features


def _rows(encoder: FeatureEncoder, rng: np.random.Generator) -> np.ndarray:
    features = rng.lognormal(size=(ROWS, len(encoder.feature_names)))
    for column, name in enumerate(encoder.feature_names[: encoder.base_feature_count]):
        if name in encoder.categorical_features:
            features[:, column] = rng.integers(0, 3, ROWS)
        features[rng.random(ROWS) < 0.05 * (column + 1), column] = np.nan
    return features


def test_counts_and_ranges_are_of_every_row_and_deciles_close_to_theirs(tmp_path: Path) -> None:
    encoder = _encoder(tmp_path)
    features = _rows(encoder, np.random.default_rng(3))
    numeric = next(i for i, n in enumerate(encoder.feature_names) if n not in encoder.categorical_features)
    features[1, numeric] = 1e6  # in a row the histograms skip (every third row is read)
    features[2, numeric] = -1.0

    found = profile(features, encoder, {})

    for column, name in enumerate(encoder.feature_names[: encoder.base_feature_count]):
        values = features[:, column]
        present = values[~np.isnan(values)]
        entry = found[name]
        assert entry["missing_rate"] == np.isnan(values).mean()
        shares = entry["histogram"]["shares"]
        assert abs(sum(shares) - 1.0) < 1e-9
        assert abs(shares[-1] - entry["missing_rate"]) < 0.005  # the sample's missing share
        if name in encoder.categorical_features:
            assert entry["histogram"]["categories"] == [0.0, 1.0, 2.0]
            continue
        assert (entry["min"], entry["max"]) == (present.min(), present.max())
        assert abs(entry["mean"] - present.mean()) < 1e-9 * abs(present.mean())
        exact = np.quantile(present, DECILES)
        within = np.searchsorted(np.sort(present), entry["histogram"]["edges"]) / len(present)
        assert np.abs(within - DECILES).max() < 0.005, (name, exact, entry["histogram"]["edges"])
    assert found[encoder.feature_names[numeric]]["max"] == 1e6
    assert found[encoder.feature_names[numeric]]["min"] == -1.0


def test_the_same_data_does_not_drift_and_moved_data_does(tmp_path: Path) -> None:
    encoder = _encoder(tmp_path)
    reference = profile(_rows(encoder, np.random.default_rng(4)), encoder, {})
    same = drift(_rows(encoder, np.random.default_rng(5)), encoder, reference)
    assert max(same.values()) < 0.001
    moved = _rows(encoder, np.random.default_rng(6))
    moved[:, 0] *= 3.0
    assert drift(moved, encoder, reference)[encoder.feature_names[0]] > 0.25
