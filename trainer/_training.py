"""Training one outcome's model and deciding whether it may replace the champion.

The examples are split by decision time: the latest ``holdout_fraction`` is kept aside, the model
is trained on what came before, and challenger, champion and a constant baseline are all scored on
the same held-out rows — the way the model will meet the future.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import lightgbm as lgb
import numpy as np
from sklearn.metrics import log_loss, mean_squared_error, roc_auc_score

from closedloop.contracts import OutcomeConfig, UseCaseConfig
from closedloop.policy import FeatureEncoder

from ._store import LabelledRows

Metrics = dict[str, float]


@dataclass(frozen=True)
class Dataset:
    features: np.ndarray
    labels: np.ndarray
    decided_at: np.ndarray

    @classmethod
    def from_rows(cls, rows: LabelledRows, encoder: FeatureEncoder) -> Dataset:
        return cls(encoder.encode_logged_columns(rows.features, len(rows)), rows.values, rows.decided_at)

    def __len__(self) -> int:
        return len(self.labels)

    def split_by_time(self, holdout_fraction: float) -> tuple[Dataset, Dataset]:
        """Earlier rows to train on, the latest ``holdout_fraction`` to evaluate on (rows in time order)."""
        cut = len(self) - round(len(self) * holdout_fraction)
        return self._rows(slice(0, cut)), self._rows(slice(cut, len(self)))

    def latest(self, rows: int) -> Dataset:
        """The latest ``rows`` rows (rows are in time order)."""
        return self._rows(slice(max(0, len(self) - rows), len(self)))

    def extended(self, newer: Dataset, *, limit: int) -> Dataset:
        """These rows then ``newer`` (all later), keeping the latest ``limit``."""
        features = np.concatenate([self.features, newer.features])[-limit:]
        labels = np.concatenate([self.labels, newer.labels])[-limit:]
        decided_at = np.concatenate([self.decided_at, newer.decided_at])[-limit:]
        return Dataset(features, labels, decided_at)

    def _rows(self, rows: slice) -> Dataset:
        return Dataset(self.features[rows], self.labels[rows], self.decided_at[rows])


def lightgbm_params(use_case: UseCaseConfig, outcome: OutcomeConfig, seed: int) -> dict[str, Any]:
    model = use_case.model
    threads = {"num_threads": model.num_threads} if model.num_threads else {}
    return {
        **threads,
        "objective": "binary" if outcome.type == "binary" else "regression",
        "learning_rate": model.learning_rate,
        "num_leaves": model.num_leaves,
        "min_data_in_leaf": model.min_data_in_leaf,
        "feature_fraction": model.feature_fraction,
        "lambda_l2": model.lambda_l2,
        "seed": seed,
        "deterministic": True,
        "verbose": -1,
    }


EARLY_STOPPING_ROUNDS = 30
VALIDATION_FRACTION = 0.15
"""The latest share of the training rows that early stopping watches (the held-out rows the gate
judges on are later still, and never seen here)."""


class FitEngine(Protocol):
    """Where the trees are fitted once their number is known: here (`LOCAL`), or on a Dask
    cluster (`DaskEngine`)."""

    search_rows: int | None
    """How many of the latest rows early stopping searches the number of trees on (None: all)."""

    def trees(
        self, data: Dataset, encoder: FeatureEncoder, params: dict[str, Any], count: int
    ) -> lgb.Booster:
        """A model of ``count`` trees fitted on all of ``data``."""
        ...


class _InProcess:
    search_rows: int | None = None

    def trees(
        self, data: Dataset, encoder: FeatureEncoder, params: dict[str, Any], count: int
    ) -> lgb.Booster:
        return lgb.train(params, _lightgbm_data(data, encoder), num_boost_round=count)


LOCAL: FitEngine = _InProcess()


def fit(
    data: Dataset,
    encoder: FeatureEncoder,
    params: dict[str, Any],
    num_trees: int | None,
    *,
    max_trees: int = 1000,
    engine: FitEngine = LOCAL,
) -> lgb.Booster:
    """A model of ``num_trees`` trees; with None, as many as early stopping finds on the latest
    rows (up to ``max_trees``), then refitted on all of ``data`` with that many."""
    if num_trees is None:
        searched = data if engine.search_rows is None else data.latest(engine.search_rows)
        num_trees = trees_by_early_stopping(searched, encoder, params, max_trees)
    return engine.trees(data, encoder, params, num_trees)


def fit_to_judge(
    data: Dataset,
    encoder: FeatureEncoder,
    params: dict[str, Any],
    num_trees: int | None,
    *,
    max_trees: int = 1000,
    engine: FitEngine = LOCAL,
) -> tuple[lgb.Booster, int]:
    """A model for the gate to judge, and how many of ``data``'s rows it learned from.

    When early stopping searches all of ``data`` here, the model it stopped is the one judged
    (it learned the earliest ``1 - VALIDATION_FRACTION`` of the rows): fitting another on every
    row only to judge it cost a third of a retrain (``bench/trainer_throughput.py``), and the
    published model is refitted on all rows anyway. Otherwise (trees fixed, a search on a
    sample, too few rows) the model is fitted on all of ``data`` with the engine."""
    if num_trees is None and engine.search_rows is None:
        stopped = _early_stopped(data, encoder, params, max_trees)
        if stopped is not None:
            booster, learned = stopped
            return booster, learned
    return fit(data, encoder, params, num_trees, max_trees=max_trees, engine=engine), len(data)


def trees_by_early_stopping(
    data: Dataset, encoder: FeatureEncoder, params: dict[str, Any], max_trees: int
) -> int:
    stopped = _early_stopped(data, encoder, params, max_trees)
    return min(max_trees, 100) if stopped is None else stopped[0].num_trees()


def _early_stopped(
    data: Dataset, encoder: FeatureEncoder, params: dict[str, Any], max_trees: int
) -> tuple[lgb.Booster, int] | None:
    """The model early stopping keeps (the latest ``VALIDATION_FRACTION`` of the rows watched, the
    rest learned; cut to its best number of trees) and the rows it learned; None for too few rows."""
    earlier, later = data.split_by_time(VALIDATION_FRACTION)
    if len(later) < 50 or len(earlier) < 50:
        return None
    train = _lightgbm_data(earlier, encoder)
    valid = lgb.Dataset(later.features, later.labels, reference=train)
    booster = lgb.train(
        params,
        train,
        num_boost_round=max_trees,
        valid_sets=[valid],
        callbacks=[lgb.early_stopping(EARLY_STOPPING_ROUNDS, verbose=False)],
    )
    best = max(1, int(booster.best_iteration or max_trees))
    if booster.num_trees() > best:
        booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=best))
    return booster, len(earlier)


def _lightgbm_data(data: Dataset, encoder: FeatureEncoder) -> lgb.Dataset:
    return lgb.Dataset(
        data.features,
        data.labels,
        feature_name=list(encoder.feature_names),
        categorical_feature=list(encoder.categorical_features) or "auto",
        free_raw_data=True,
    )


def evaluate(predictions: np.ndarray, labels: np.ndarray, outcome: OutcomeConfig) -> Metrics:
    if outcome.type == "continuous":
        return {"rmse": float(np.sqrt(mean_squared_error(labels, predictions)))}
    clipped = np.clip(predictions, 1e-7, 1 - 1e-7)
    metrics = {"logloss": float(log_loss(labels, clipped, labels=[0.0, 1.0]))}
    if 0 < labels.sum() < len(labels):  # AUC needs both classes
        metrics["auc"] = float(roc_auc_score(labels, predictions))
    return metrics


def constant_predictions(train_labels: np.ndarray, rows: int) -> np.ndarray:
    """The baseline every model must beat: the training mean, whatever the features."""
    return np.full(rows, float(train_labels.mean()) if len(train_labels) else 0.0)
