"""Off-policy evaluation of an experiment's arms, and of the current champions, on its logged sample.

The reward is the use case's policy value of each logged decision's outcomes. The reward model
is LightGBM on the logged actions' features, cross-fitted over two halves of the sample so that no
decision's own reward shapes the prediction it is corrected by.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import lightgbm as lgb
import numpy as np

from closedloop.contracts import (
    ArmPolicy,
    DecisionEvent,
    ExperimentPhase,
    UseCaseConfig,
)
from closedloop.policy import BINARY_CANDIDATES, Experience, OfflinePolicy

from ._logged import LoggedDecisions, sampled_events
from ._offpolicy import OffPolicyEstimates, PolicyValue, off_policy_estimates
from ._ranking_ope import LoggedRankings
from ._report_model import Interval, OpeEstimate, OpeResult, RankingOpe, RankingOpeEstimate
from ._stats import Z

_REWARD_PARAMS = {
    "objective": "regression",
    "num_leaves": 31,
    "learning_rate": 0.1,
    "min_data_in_leaf": 20,
    "verbose": -1,
    "num_threads": 2,
    "seed": 11,
}
_REWARD_TREES = 100


class LoggedBandit:
    """The sampled decisions as arrays: stacked candidate rows, logged action, propensity, reward."""

    def __init__(self, use_case: UseCaseConfig, data: LoggedDecisions) -> None:
        self.encoder = OfflinePolicy(use_case)
        columns = {name: data.outcomes[:, i] for i, name in enumerate(use_case.outcomes)}
        value = np.broadcast_to(
            np.asarray(use_case.policy.value_expression.evaluate(columns), dtype=float), len(data.decision)
        )
        rows, offsets, chosen, propensity, reward, candidates = [], [0], [], [], [], []
        outcomes, times = [], []
        self.bad_propensity = 0
        for event, row in sampled_events(data):
            if event is not None and row is None:
                continue  # its window is still open
            action = _logged_action(event) if event else None
            if event is None or action is None or row is None:
                self.bad_propensity += 1
                continue
            features = [c.features for c in event.candidates]
            encoded = self.encoder.encode(event.context, [] if event.decision_type == "binary" else features)
            rows.append(encoded)
            offsets.append(offsets[-1] + len(encoded))
            chosen.append(action)
            propensity.append(event.propensity)
            reward.append(float(value[row]))
            outcomes.append(data.outcomes[row])
            times.append(float(data.time[row]))
            candidates.append(features)
        self.rows = np.vstack(rows) if rows else np.zeros((0, 0))
        self.offsets = np.array(offsets)
        self.chosen = np.array(chosen, dtype=int)
        self.propensity = np.array(propensity)
        self.reward = np.array(reward)
        self.outcomes = np.array(outcomes).reshape(len(chosen), len(use_case.outcomes))
        """decisions x outcomes (each outcome's default where no feedback came)."""
        self.time = np.array(times)
        self.candidates = candidates

    def __len__(self) -> int:
        return len(self.chosen)

    def split_by_time(self, fraction: float) -> tuple[LoggedBandit, LoggedBandit]:
        """The earliest ``fraction`` of decisions, and the rest."""
        order = np.argsort(self.time, kind="stable")
        cut = round(len(order) * fraction)
        return self._subset(np.sort(order[:cut])), self._subset(np.sort(order[cut:]))

    def _subset(self, decisions: np.ndarray) -> LoggedBandit:
        part = copy.copy(self)
        sizes = np.diff(self.offsets)[decisions]
        part.rows = (
            np.vstack([self.rows[self.offsets[i] : self.offsets[i + 1]] for i in decisions])
            if len(decisions)
            else self.rows[:0]
        )
        part.offsets = np.concatenate([[0], np.cumsum(sizes)])
        part.chosen = self.chosen[decisions]
        part.propensity = self.propensity[decisions]
        part.reward = self.reward[decisions]
        part.outcomes = self.outcomes[decisions]
        part.time = self.time[decisions]
        part.candidates = [self.candidates[i] for i in decisions]
        return part

    def logged_rows(self) -> np.ndarray:
        return np.asarray(self.rows[self.offsets[:-1] + self.chosen])

    def reward_model(self, reward: np.ndarray | None = None) -> np.ndarray:
        """Cross-fitted predicted reward (the policy value, or ``reward``) of every stacked row."""
        reward = self.reward if reward is None else reward
        n = len(self)
        fold_of_decision = np.arange(n) % 2
        fold_of_row = np.repeat(fold_of_decision, np.diff(self.offsets))
        predicted = np.empty(len(self.rows))
        logged = self.logged_rows()
        for fold in (0, 1):
            fit = fold_of_decision != fold
            apply = fold_of_row == fold
            if fit.sum() < 50:
                predicted[apply] = float(reward[fit].mean()) if fit.any() else 0.0
                continue
            booster = lgb.train(
                _REWARD_PARAMS, lgb.Dataset(logged[fit], reward[fit]), num_boost_round=_REWARD_TREES
            )
            predicted[apply] = booster.predict(self.rows[apply])
        return predicted


def _logged_action(event: DecisionEvent) -> int | None:
    """The index of the logged action among the decision's actions, or None when its propensity
    is not a probability or the action is not among them (such a decision cannot be reweighted)."""
    p = event.propensity
    if not 0 < p <= 1 or not math.isfinite(p):
        return None
    ids = list(BINARY_CANDIDATES) if event.decision_type == "binary" else [c.id for c in event.candidates]
    action = event.ranking[0] if event.decision_type == "rank" and event.ranking else event.choice
    return ids.index(action) if action in ids else None


def evaluate_policies(
    use_case: UseCaseConfig,
    phase: ExperimentPhase,
    data: LoggedDecisions,
    models: Mapping[str, Any],
    notes: list[str],
    experience: Experience | None = None,
) -> OpeResult | None:
    bandit = LoggedBandit(use_case, data)
    if bandit.bad_propensity:
        notes.append(
            f"{bandit.bad_propensity} sampled decisions have a missing, zero or out-of-range propensity "
            "(or a logged action that is not among their candidates, or a form this version cannot "
            "read); off-policy estimates leave them out."
        )
    if len(bandit) < 10:
        notes.append("Too few decisions with closed windows for off-policy evaluation (need 10).")
        return None
    q = bandit.reward_model()
    q_logged = q[bandit.offsets[:-1] + bandit.chosen]
    targets: list[tuple[str, str, OfflinePolicy]] = [
        (name, _describe(arm), OfflinePolicy(use_case, arm, models=models, experience=experience))
        for name, arm in phase.arms.items()
    ]
    if models:
        versions = ", ".join(sorted(models))
        targets.append(
            (
                "champions",
                f"the current champion models ({versions}) with the use case's policy",
                OfflinePolicy(use_case, None, models=models, experience=experience),
            )
        )
    estimates = []
    for name, description, policy in targets:
        result = estimate_policy(bandit, policy, q, q_logged)
        estimates.append(
            OpeEstimate(
                policy=name,
                description=description,
                ips=_interval(result.ips),
                snips=_interval(result.snips),
                direct=_interval(result.direct),
                doubly_robust=_interval(result.doubly_robust),
                effective_sample_size=result.effective_sample_size,
                decisions=result.decisions,
            )
        )
    mean = float(bandit.reward.mean())
    half = Z * float(bandit.reward.std(ddof=1)) / math.sqrt(len(bandit))
    return OpeResult(
        reward=use_case.policy.value,
        logged_value=Interval(estimate=mean, low=mean - half, high=mean + half),
        sample=len(bandit),
        policies=estimates,
        ranking=_ranking_ope(use_case, data, targets, notes),
    )


def _ranking_ope(
    use_case: UseCaseConfig,
    data: LoggedDecisions,
    targets: list[tuple[str, str, OfflinePolicy]],
    notes: list[str],
) -> RankingOpe | None:
    """The rankings decided with slots, valued over every shown slot (None without any)."""
    if use_case.decision != "rank":
        return None
    rankings = LoggedRankings(use_case, data)
    if rankings.unusable:
        notes.append(
            f"{rankings.unusable} sampled rankings show a candidate they do not list or have a propensity "
            "out of range; the rankings' estimates leave them out."
        )
    if len(rankings) < 10:
        return None
    estimates = []
    for name, description, policy in targets:
        result = rankings.estimate(policy)
        estimates.append(
            RankingOpeEstimate(
                policy=name,
                description=description,
                ips=_interval(result.ips),
                snips=_interval(result.snips),
                effective_sample_size=result.effective_sample_size,
                rankings=result.rankings,
            )
        )
        if result.effective_sample_size < 200:
            notes.append(
                f"The rankings' estimate of {name} rests on {result.effective_sample_size:.0f} effective "
                "rankings: its interval may be too narrow (the weights multiply down the slots)."
            )
    return RankingOpe(
        logged_value=_interval(rankings.logged_value()),
        rankings=len(rankings),
        slots=int(rankings.mask.shape[1]),
        policies=estimates,
    )


def _describe(arm: ArmPolicy) -> str:
    parts = ["default policy" if arm.policy == "default" else "models"]
    for field in ("value", "epsilon", "temperature", "threshold"):
        value = getattr(arm, field)
        if value is not None:
            parts.append(f"{field}={value}")
    return ", ".join(parts)


def _interval(value: PolicyValue) -> Interval:
    def clean(x: float) -> float | None:
        return x if math.isfinite(x) else None

    return Interval(estimate=clean(value.estimate), low=clean(value.low), high=clean(value.high))


def estimate_policy(
    bandit: LoggedBandit,
    policy: OfflinePolicy,
    q: np.ndarray,
    q_logged: np.ndarray,
    reward: np.ndarray | None = None,
) -> OffPolicyEstimates:
    """Off-policy estimates of ``policy`` for the policy value (or ``reward``, whose reward model
    ``q`` is)."""
    probabilities = policy.batch_probabilities(bandit.rows, bandit.offsets, bandit.candidates)
    target_logged = np.array([p[a] for p, a in zip(probabilities, bandit.chosen, strict=True)])
    under_target = np.array(
        [float(np.dot(p, q[bandit.offsets[i] : bandit.offsets[i + 1]])) for i, p in enumerate(probabilities)]
    )
    return off_policy_estimates(
        bandit.reward if reward is None else reward, bandit.propensity, target_logged, q_logged, under_target
    )
