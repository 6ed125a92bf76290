"""Candidate values from models: each outcome's prediction, combined by the value function."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import numpy as np

from closedloop.contracts import ValueExpression


class Predictor(Protocol):
    """What scores encoded rows: a LightGBM booster, or a serving model wrapping one."""

    def predict(self, rows: np.ndarray) -> np.ndarray: ...


def model_values(
    expression: ValueExpression, models: Mapping[str, Predictor], rows: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
    """Per-outcome predictions and each row's value, or None until every outcome the value
    function names has a model (then the default policy serves)."""
    if not expression.names <= models.keys():
        return None
    predictions = {outcome: np.asarray(model.predict(rows)) for outcome, model in models.items()}
    if expression.outcome is not None:  # ``value: click``, the usual: the prediction is the value
        return predictions, predictions[expression.outcome]
    with np.errstate(all="ignore"):  # a division by a zero prediction: inf or nan, for the caller
        values = np.broadcast_to(np.asarray(expression.evaluate(predictions), dtype=float), len(rows))
    return predictions, values
