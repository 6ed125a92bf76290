"""The service's direct LightGBM call predicts exactly what ``Booster.predict`` does."""

from __future__ import annotations

import lightgbm as lgb
import numpy as np
import pytest

from closedloop.decision_service._row_predictor import RowPredictor


def _booster(objective: str, labels: np.ndarray, rows: np.ndarray, **params: object) -> lgb.Booster:
    trained = lgb.train(
        {"objective": objective, "num_leaves": 7, "verbose": -1, **params},
        lgb.Dataset(rows, labels),
        num_boost_round=15,
    )
    return lgb.Booster(model_str=trained.model_to_string())  # as the service loads it


@pytest.mark.parametrize("objective", ["binary", "regression", "poisson"])
def test_direct_predictions_equal_the_library_s_on_slices_and_copies(objective: str) -> None:
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(400, 6))
    labels = {
        "binary": (rows[:, 0] > 0).astype(float),
        "regression": rows[:, 1] * 3.0,
        "poisson": rng.poisson(np.exp(rows[:, 2] / 2)).astype(float),
    }[objective]
    booster = _booster(objective, labels, rows)
    predictor = RowPredictor(booster)
    assert predictor.direct
    served = np.hstack([rows[:20], np.zeros((20, 1))])  # the slot column the model lacks
    for batch in (served[:, :6], rows[:20], rows[:1], rows[:20].astype(np.float32)):
        np.testing.assert_array_equal(predictor.predict(batch), booster.predict(batch, num_threads=1))


def test_a_multiclass_model_goes_through_the_library() -> None:
    rng = np.random.default_rng(2)
    rows = rng.normal(size=(300, 4))
    booster = _booster("multiclass", (rows[:, 0] > 0).astype(float) + (rows[:, 1] > 0), rows, num_class=3)
    predictor = RowPredictor(booster)
    assert not predictor.direct
    np.testing.assert_array_equal(predictor.predict(rows[:5]), booster.predict(rows[:5], num_threads=1))


def test_a_model_with_a_best_iteration_predicts_with_it() -> None:
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(400, 5))
    labels = (rows[:, 0] + rng.normal(size=400) > 0).astype(float)
    trained = lgb.train(
        {"objective": "binary", "verbose": -1, "num_leaves": 7},
        lgb.Dataset(rows[:300], labels[:300]),
        num_boost_round=200,
        valid_sets=[lgb.Dataset(rows[300:], labels[300:])],
        callbacks=[lgb.early_stopping(5, verbose=False)],
    )
    assert 0 < trained.best_iteration < 200
    predictor = RowPredictor(trained)
    np.testing.assert_array_equal(predictor.predict(rows[:20]), trained.predict(rows[:20], num_threads=1))
