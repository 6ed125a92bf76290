"""The promotion gate against truth: two models of equal quality are told apart only by noise, so
one must replace the other nearly always; a model worse than the champion, or no better than the
constant, must not. Simulated held-out sets with known click probabilities."""

from __future__ import annotations

import numpy as np

from closedloop.contracts import OutcomeConfig, PromotionGate
from closedloop.trainer import gate

CLICK = OutcomeConfig(type="binary", window="30m")
ROWS = 2000


def _held_out(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    logit = rng.normal(-1.0, 1.2, size=ROWS)
    labels = (rng.random(ROWS) < 1 / (1 + np.exp(-logit))).astype(float)
    return logit, labels


def _model(logit: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    return np.asarray(1 / (1 + np.exp(-(logit + rng.normal(0, noise, size=len(logit))))))


def _log_loss(labels: np.ndarray, p: np.ndarray) -> float:
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def test_an_equal_model_is_promoted_and_a_worse_or_useless_one_is_not() -> None:
    rng = np.random.default_rng(3)
    equal = worse = useless = older_rule = 0
    trials = 200
    for _ in range(trials):
        logit, labels = _held_out(rng)
        constant = np.full(ROWS, labels.mean())
        champion = ("champion v1", _model(logit, rng, 0.3))
        same = _model(logit, rng, 0.3)
        equal += gate(
            labels, same, constant=constant, champion=champion, outcome=CLICK, rules=PromotionGate()
        ).passed
        bad = _model(logit, rng, 1.5)
        worse += gate(
            labels, bad, constant=constant, champion=champion, outcome=CLICK, rules=PromotionGate()
        ).passed
        noise = np.clip(constant + rng.normal(0, 0.01, size=ROWS), 0.01, 0.99)
        useless += gate(
            labels, noise, constant=constant, champion=None, outcome=CLICK, rules=PromotionGate()
        ).passed
        older_rule += _log_loss(labels, same) <= _log_loss(labels, champion[1])  # zero tolerance
    assert equal / trials > 0.9  # the interval's lower end crosses 0 only ~2.5% of the time
    assert 0.3 < older_rule / trials < 0.7  # what the zero-tolerance rule did: a coin flip
    assert worse / trials < 0.02
    assert useless / trials < 0.05


def test_the_champion_is_judged_only_on_rows_it_did_not_learn() -> None:
    """A champion refitted on its own gate's held-out rows predicts them too well; the trainer
    marks them NaN, and the gate compares on the rest."""
    rng = np.random.default_rng(4)
    logit, labels = _held_out(rng)
    constant = np.full(ROWS, labels.mean())
    challenger = _model(logit, rng, 0.3)
    leaked = _model(logit, rng, 0.3)
    leaked[: ROWS // 2] = np.clip(labels[: ROWS // 2], 0.02, 0.98)  # it has seen these labels
    rules = PromotionGate()
    flattered = gate(
        labels, challenger, constant=constant, champion=("champion v1", leaked), outcome=CLICK, rules=rules
    )
    assert not flattered.passed  # judged on every row, the equal challenger looks far worse
    honest = leaked.copy()
    honest[: ROWS // 2] = np.nan
    judged = gate(
        labels, challenger, constant=constant, champion=("champion v1", honest), outcome=CLICK, rules=rules
    )
    assert judged.passed, judged.summary
    assert judged.comparisons["champion v1"]["low"] < 0  # the two are alike on unseen rows
