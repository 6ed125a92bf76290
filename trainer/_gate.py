"""The promotion gate: promote a challenger unless the held-out rows show it credibly worse.

Comparing two held-out metrics with zero tolerance rejects about half of all equal models on noise
(a log-loss of 0.4908 against the champion's 0.4908). Instead the gate pairs the rows: for each
held-out row, the challenger's loss minus the reference's (log-loss for binary outcomes, squared
error for continuous ones), and a 95% t-interval of the mean difference (scipy). The challenger

- must be credibly better than the constant baseline (the interval's upper end below 0): a model
  no better than the training mean teaches the policy nothing;
- must not be credibly worse than the champion: the interval's lower end may not exceed the
  tolerance (``max_logloss_increase``, or ``max_rmse_increase`` turned into squared error).

``max_auc_drop``, when set, adds the older check on AUC. The intervals go into the lineage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats
from sklearn.metrics import roc_auc_score

from closedloop.contracts import OutcomeConfig, PromotionGate

CONFIDENCE = 0.95


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    """Why it failed (or, when it passed, what it was compared with)."""
    comparisons: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per reference: the mean paired loss difference and its interval."""

    @property
    def summary(self) -> str:
        return "; ".join(self.reasons)


def row_losses(predictions: np.ndarray, labels: np.ndarray, outcome: OutcomeConfig) -> np.ndarray:
    if outcome.type == "continuous":
        return np.asarray((predictions - labels) ** 2)
    p = np.clip(predictions, 1e-7, 1 - 1e-7)
    return np.asarray(-(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def paired_difference(challenger: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Mean of challenger minus reference loss per row, with its t-interval."""
    differences = challenger - reference
    mean = float(differences.mean())
    error = float(differences.std(ddof=1) / np.sqrt(len(differences))) if len(differences) > 1 else np.inf
    if error == 0.0:
        return {"mean": mean, "low": mean, "high": mean}
    low, high = stats.t.interval(CONFIDENCE, len(differences) - 1, loc=mean, scale=error)
    return {"mean": mean, "low": float(low), "high": float(high)}


def gate(
    labels: np.ndarray,
    challenger: np.ndarray,
    *,
    constant: np.ndarray,
    champion: tuple[str, np.ndarray] | None,
    outcome: OutcomeConfig,
    rules: PromotionGate,
) -> GateDecision:
    """Judge the challenger's held-out predictions against the constant's and the champion's
    (``(name, predictions)``, or None before any champion; the champion is judged only on the rows
    where its prediction is not NaN, those it did not learn from)."""
    losses = row_losses(challenger, labels, outcome)
    unit = "squared error" if outcome.type == "continuous" else "log-loss"
    failures: list[str] = []
    comparisons = {"constant baseline": paired_difference(losses, row_losses(constant, labels, outcome))}
    versus_constant = comparisons["constant baseline"]
    if not versus_constant["high"] < 0:
        failures.append(
            f"not credibly better than the constant baseline: {unit} difference "
            f"{_interval(versus_constant)} per held-out row"
        )
    unseen = ~np.isnan(champion[1]) if champion is not None else None
    if champion is not None and unseen is not None and unseen.sum() > 1:
        name, predictions = champion[0], champion[1][unseen]
        labels, challenger, losses = labels[unseen], challenger[unseen], losses[unseen]
        reference = row_losses(predictions, labels, outcome)
        versus = comparisons[name] = paired_difference(losses, reference)
        tolerance = _tolerance(reference, outcome, rules)
        if versus["low"] > tolerance:
            failures.append(
                f"credibly worse than {name}: {unit} difference {_interval(versus)} per held-out row"
                f" (tolerance {tolerance:.4g})"
            )
        failures.extend(_auc_drop(labels, challenger, predictions, name, outcome, rules))
    if failures:
        return GateDecision(False, failures, comparisons)
    compared = champion[0] if champion else "constant baseline"
    return GateDecision(
        True,
        [f"not credibly worse than {compared} and better than the constant on held-out data"],
        comparisons,
    )


def _tolerance(reference: np.ndarray, outcome: OutcomeConfig, rules: PromotionGate) -> float:
    if outcome.type == "continuous":
        rmse = float(np.sqrt(reference.mean()))
        return (rmse + rules.max_rmse_increase) ** 2 - rmse**2
    return rules.max_logloss_increase


def _auc_drop(
    labels: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray,
    name: str,
    outcome: OutcomeConfig,
    rules: PromotionGate,
) -> list[str]:
    if rules.max_auc_drop is None or outcome.type != "binary" or not 0 < labels.sum() < len(labels):
        return []
    new, old = float(roc_auc_score(labels, challenger)), float(roc_auc_score(labels, champion))
    if new >= old - rules.max_auc_drop:
        return []
    return [f"AUC {new:.4f} < {name}'s {old:.4f} - max_auc_drop {rules.max_auc_drop}"]


def _interval(difference: dict[str, float]) -> str:
    return f"{difference['mean']:+.4g} [{difference['low']:+.4g}, {difference['high']:+.4g}]"
