"""Training one outcome's model and deciding whether it may replace the champion.

The examples are split by decision time: the latest ``holdout_fraction`` is kept aside, the model
is trained on what came before, and challenger, champion and a constant baseline are all scored on
the same held-out rows — the way the model will meet the future.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
from sklearn.metrics import log_loss, mean_squared_error, roc_auc_score

from closedloop.contracts import OutcomeConfig, PromotionGate, UseCaseConfig
from closedloop.policy import FeatureEncoder

from ._store import LabelledExample

Metrics = dict[str, float]


@dataclass(frozen=True)
class Dataset:
    features: np.ndarray
    labels: np.ndarray
    decided_at: np.ndarray

    @classmethod
    def from_examples(cls, rows: Sequence[LabelledExample], encoder: FeatureEncoder) -> Dataset:
        return cls(
            encoder.encode_logged([row.features for row in rows]),
            np.fromiter((row.value for row in rows), dtype=np.float64, count=len(rows)),
            np.fromiter((row.decided_at for row in rows), dtype=np.float64, count=len(rows)),
        )

    def __len__(self) -> int:
        return len(self.labels)

    def split_by_time(self, holdout_fraction: float) -> tuple[Dataset, Dataset]:
        """Earlier rows to train on, the latest ``holdout_fraction`` to evaluate on (rows in time order)."""
        cut = len(self) - round(len(self) * holdout_fraction)
        return self._rows(slice(0, cut)), self._rows(slice(cut, len(self)))

    def _rows(self, rows: slice) -> Dataset:
        return Dataset(self.features[rows], self.labels[rows], self.decided_at[rows])


def lightgbm_params(use_case: UseCaseConfig, outcome: OutcomeConfig, seed: int) -> dict[str, Any]:
    model = use_case.model
    return {
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


def fit(data: Dataset, encoder: FeatureEncoder, params: dict[str, Any], num_trees: int) -> lgb.Booster:
    dataset = lgb.Dataset(
        data.features,
        data.labels,
        feature_name=list(encoder.feature_names),
        categorical_feature=list(encoder.categorical_features) or "auto",
        free_raw_data=True,
    )
    return lgb.train(params, dataset, num_boost_round=num_trees)


def evaluate(predictions: np.ndarray, labels: np.ndarray, outcome: OutcomeConfig) -> Metrics:
    if outcome.type == "continuous":
        return {"rmse": float(np.sqrt(mean_squared_error(labels, predictions)))}
    clipped = np.clip(predictions, 1e-7, 1 - 1e-7)
    metrics = {"logloss": float(log_loss(labels, clipped, labels=[0.0, 1.0]))}
    if 0 < labels.sum() < len(labels):  # AUC needs both classes
        metrics["auc"] = float(roc_auc_score(labels, predictions))
    return metrics


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    """Why it failed (or, when it passed, what it was compared with)."""

    @property
    def summary(self) -> str:
        return "; ".join(self.reasons)


def gate(
    challenger: Metrics,
    reference: Metrics,
    reference_name: str,
    outcome: OutcomeConfig,
    rules: PromotionGate,
) -> GateDecision:
    """Compare the challenger with a reference (the champion, or the constant baseline)."""
    failures: list[str] = []
    if outcome.type == "continuous":
        limit = reference["rmse"] + rules.max_rmse_increase
        if challenger["rmse"] > limit:
            failures.append(
                f"RMSE {challenger['rmse']:.4f} > {reference_name}'s {reference['rmse']:.4f}"
                f" + max_rmse_increase {rules.max_rmse_increase}"
            )
    else:
        if "auc" in challenger and "auc" in reference:
            floor = reference["auc"] - rules.max_auc_drop
            if challenger["auc"] < floor:
                failures.append(
                    f"AUC {challenger['auc']:.4f} < {reference_name}'s {reference['auc']:.4f}"
                    f" - max_auc_drop {rules.max_auc_drop}"
                )
        ceiling = reference["logloss"] + rules.max_logloss_increase
        if challenger["logloss"] > ceiling:
            failures.append(
                f"log-loss {challenger['logloss']:.4f} > {reference_name}'s {reference['logloss']:.4f}"
                f" + max_logloss_increase {rules.max_logloss_increase}"
            )
    if failures:
        return GateDecision(False, failures)
    return GateDecision(True, [f"not worse than the {reference_name} on held-out data"])


def constant_predictions(train_labels: np.ndarray, rows: int) -> np.ndarray:
    """The baseline every model must beat: the training mean, whatever the features."""
    return np.full(rows, float(train_labels.mean()) if len(train_labels) else 0.0)
