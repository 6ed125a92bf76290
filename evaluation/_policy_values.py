"""Doubly robust values of policy variants, metric by metric, on one sample of logged decisions.

The tuner's offline mode and the trainer's off-policy promotion check measure candidates here: the
logs are read and one cross-fitted reward model per metric is fitted once, then each candidate costs
one pass of its policy over the sample.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from closedloop.contracts import ArmPolicy, ClosedLoopConfig, Topics, UseCaseConfig
from closedloop.eventlog import scan_topic
from closedloop.policy import Experience, OfflinePolicy

from ._logged import Gatherer
from ._offpolicy import OffPolicyEstimates
from ._ope_data import LoggedBandit, estimate_policy

VALUE = "value"
"""The metric name of the use case's own value function."""
MIN_DECISIONS = 10


@dataclass(frozen=True)
class TrainingRows:
    """The logged actions' encoded rows and outcomes of the decisions kept out of the evaluation,
    for fitting candidate models (``model.*`` tuning parameters)."""

    features: np.ndarray
    outcomes: dict[str, np.ndarray]


class OfflineEvaluator:
    def __init__(
        self,
        use_case: UseCaseConfig,
        bandit: LoggedBandit,
        metrics: Sequence[str],
        training: LoggedBandit | None = None,
    ) -> None:
        if len(bandit) < MIN_DECISIONS:
            raise ValueError(
                f"only {len(bandit)} logged decisions with closed outcome windows to evaluate policies on "
                f"(need {MIN_DECISIONS})"
            )
        self.use_case = use_case
        self.metrics = list(metrics)
        self._bandit = bandit
        self._training = training
        self._rewards = {metric: _metric_values(use_case, bandit, metric) for metric in self.metrics}
        self._q = {metric: bandit.reward_model(reward) for metric, reward in self._rewards.items()}
        self._q_logged = {metric: q[bandit.offsets[:-1] + bandit.chosen] for metric, q in self._q.items()}

    @classmethod
    def from_logs(
        cls,
        config: ClosedLoopConfig,
        use_case_name: str,
        metrics: Sequence[str],
        *,
        as_of: float,
        since: float | None = None,
        sample: int = 20_000,
        training_fraction: float = 0.0,
        consumer_config: Mapping[str, Any] | None = None,
    ) -> OfflineEvaluator:
        """A uniform sample of the use case's decisions from ``since`` on whose windows closed by
        ``as_of``; ``training_fraction`` keeps the earliest decisions out as `training_rows`."""
        use_case = config.use_cases[use_case_name]
        gatherer = Gatherer(use_case_name, use_case, None, ope_sample=sample, since=since)
        topics = Topics(config.infrastructure.topic_prefix)
        infrastructure = config.infrastructure
        gatherer.read_decisions(scan_topic(infrastructure, topics.decisions, consumer_config=consumer_config))
        gatherer.read_feedback(scan_topic(infrastructure, topics.feedback, consumer_config=consumer_config))
        data = gatherer.finish(as_of=as_of, last=True)
        bandit = LoggedBandit(use_case, data)
        if training_fraction <= 0:
            return cls(use_case, bandit, metrics)
        training, evaluated = bandit.split_by_time(training_fraction)
        return cls(use_case, evaluated, metrics, training)

    @property
    def decisions(self) -> int:
        return len(self._bandit)

    def training_rows(self) -> TrainingRows | None:
        if self._training is None:
            return None
        names = list(self.use_case.outcomes)
        return TrainingRows(
            self._training.logged_rows(),
            {name: self._training.outcomes[:, i] for i, name in enumerate(names)},
        )

    def evaluate(
        self,
        arm: ArmPolicy | None = None,
        models: Mapping[str, Any] | None = None,
        experience: Experience | None = None,
    ) -> dict[str, OffPolicyEstimates]:
        """Each metric's off-policy estimates for the use case's policy changed by ``arm``, with
        ``models`` (outcome -> booster; without the ones it needs the policy is the default)
        trained on what ``experience`` says."""
        policy = OfflinePolicy(self.use_case, arm, models=models, experience=experience)
        return {
            metric: estimate_policy(
                self._bandit, policy, self._q[metric], self._q_logged[metric], self._rewards[metric]
            )
            for metric in self.metrics
        }


def _metric_values(use_case: UseCaseConfig, bandit: LoggedBandit, metric: str) -> np.ndarray:
    names = list(use_case.outcomes)
    if metric == VALUE:
        return np.asarray(bandit.reward, dtype=float)
    if metric not in names:
        raise ValueError(f"metric {metric!r} is neither {VALUE!r} nor an outcome of the use case ({names})")
    return np.asarray(bandit.outcomes[:, names.index(metric)], dtype=float)


def compare_policies_offline(
    config: ClosedLoopConfig,
    use_case_name: str,
    challenger: Mapping[str, Any],
    champion: Mapping[str, Any],
    *,
    since: float | None,
    as_of: float,
    sample: int = 20_000,
    experience: tuple[Experience, Experience] | None = None,
) -> tuple[OffPolicyEstimates, OffPolicyEstimates, int]:
    """Doubly robust values of the use case's policy with two sets of models, on a uniform sample
    of the logged decisions from ``since`` on whose windows closed by ``as_of``.

    Returns (challenger, champion, decisions used). A set that lacks a model the value function
    needs is the default policy, as it would be when serving. ``experience``: the challenger's
    and the champion's (what exploration scales with).
    """
    evaluator = OfflineEvaluator.from_logs(
        config, use_case_name, [VALUE], as_of=as_of, since=since, sample=sample
    )
    new, old = experience or (None, None)
    return (
        evaluator.evaluate(models=challenger, experience=new)[VALUE],
        evaluator.evaluate(models=champion, experience=old)[VALUE],
        evaluator.decisions,
    )
