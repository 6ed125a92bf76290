"""The decision path: check features, score with the champions, apply the policy, log, answer."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from closedloop.contracts import (
    ClosedLoopConfig,
    ClosedLoopError,
    DecideRequest,
    Decision,
    DecisionEvent,
    FeatureValue,
    InvalidRequestError,
    LoggedCandidate,
    PayloadTooLargeError,
    Topics,
    UnknownUseCaseError,
    UseCaseConfig,
    encode_decision,
)
from closedloop.eventlog import EventLog
from closedloop.policy import (
    BINARY_CANDIDATES,
    Assignment,
    FeatureEncoder,
    Pick,
    ServingPolicy,
    default_policy_values,
    model_values,
    pick_action,
)

from ._decision_index import DecisionIndex
from ._metrics import EngineMetrics
from ._serving_models import ServingModels, UseCaseModels


@dataclass(frozen=True, slots=True)
class _Checked:
    """A request checked against its use case: candidate ids and features, defaults filled."""

    use_case: UseCaseConfig
    encoder: FeatureEncoder
    ids: list[str]
    context: dict[str, FeatureValue]
    candidates: list[dict[str, FeatureValue]]


class Decider:
    def __init__(
        self,
        config: ClosedLoopConfig,
        *,
        models: ServingModels,
        index: DecisionIndex,
        event_log: EventLog,
        metrics: EngineMetrics,
        fact_ttl: float,
        rng: np.random.Generator,
        clock: Callable[[], datetime],
    ) -> None:
        self._config = config
        self._models = models
        self._index = index
        self._event_log = event_log
        self._metrics = metrics
        self._fact_ttl = fact_ttl
        self._rng = rng
        self._clock = clock
        self._topic = Topics(config.infrastructure.topic_prefix).decisions
        self._encoders = {name: FeatureEncoder(uc) for name, uc in config.use_cases.items()}
        # Built once here: outside experiments the policy never changes per decision.
        self._policies = {name: ServingPolicy.of(uc.policy) for name, uc in config.use_cases.items()}

    def feature_names(self, use_case: str) -> list[str]:
        return list(self._encoders[use_case].feature_names)

    def unknown_category_counts(self) -> dict[str, int]:
        return {name: encoder.unknown_categories for name, encoder in self._encoders.items()}

    def decide(self, request: DecideRequest) -> Decision:
        started = time.perf_counter()
        checked = self._checked(request)
        models = self._models.for_use_case(request.use_case)
        assignment = models.experiment.assign(request.unit_id) if models.experiment else None
        policy = assignment.policy if assignment else self._policies[request.use_case]
        predictions, values, pick = self._apply_policy(checked, policy, models)
        decision = _decision(request, checked, pick, values, models if predictions else None, assignment)
        replayed = self._claim_request(request.request_id, decision)
        if replayed is not None:
            return replayed
        self._log(request, checked, policy, assignment, decision, predictions)
        self._index.remember(
            [(self._index.keys.decision(decision.decision_id), request.use_case)], self._fact_ttl
        )
        self._metrics.decisions.labels(request.use_case, decision.policy).inc()
        self._metrics.decide_seconds.labels(request.use_case).observe(time.perf_counter() - started)
        return decision

    def model_values(self, request: DecideRequest) -> np.ndarray | None:
        """The serving models' value of each candidate, without exploring or logging anything
        (for scoring a policy offline); None while the default policy serves."""
        checked = self._checked(request)
        models = self._models.for_use_case(request.use_case)
        scored = self._model_values(checked, self._policies[request.use_case], models)
        return scored[1] if scored else None

    def _checked(self, request: DecideRequest) -> _Checked:
        use_case = self._use_case(request.use_case)
        encoder = self._encoders[request.use_case]
        ids = _candidate_ids(use_case, request)
        context = encoder.check_context(request.context)
        candidates = [encoder.check_candidate(c.features, i) for i, c in enumerate(request.candidates)]
        return _Checked(use_case, encoder, ids, context, candidates)

    def _apply_policy(
        self, checked: _Checked, policy: ServingPolicy, models: UseCaseModels
    ) -> tuple[dict[str, np.ndarray], np.ndarray, Pick]:
        scored = self._model_values(checked, policy, models) if policy.use_model else None
        predictions: dict[str, np.ndarray] = {}
        if scored is None:
            values = default_policy_values(checked.use_case, checked.candidates)
        else:
            predictions, values = scored
        pick = pick_action(checked.use_case, policy, values, from_model=bool(predictions), rng=self._rng)
        return predictions, values, pick

    @staticmethod
    def _model_values(
        checked: _Checked, policy: ServingPolicy, models: UseCaseModels
    ) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
        if not policy.value.names <= models.by_outcome.keys():
            return None  # before encoding: the default policy needs no rows
        rows = checked.encoder.encode(checked.context, checked.candidates)
        scored = model_values(policy.value, models.by_outcome, rows)
        if scored is not None and not np.all(np.isfinite(scored[1])):
            raise ClosedLoopError(
                f"The value function {policy.value.source!r} gave a non-finite value.",
                hint="Check for a division by a prediction that can be zero.",
            )
        return scored

    def _claim_request(self, request_id: str | None, decision: Decision) -> Decision | None:
        if request_id is None:
            return None
        key = self._index.keys.request_seen(request_id)
        if self._index.claim([key], self._fact_ttl, value=decision.model_dump_json())[0]:
            return None
        stored = self._index.lookup([key])[0]
        return Decision.model_validate_json(stored) if stored else None

    def _log(
        self,
        request: DecideRequest,
        checked: _Checked,
        policy: ServingPolicy,
        assignment: Assignment | None,
        decision: Decision,
        predictions: dict[str, np.ndarray],
    ) -> None:
        features = checked.candidates or [{} for _ in checked.ids]
        event = DecisionEvent(
            event_id=decision.decision_id,
            use_case=decision.use_case,
            unit_id=request.unit_id,
            timestamp=self._clock(),
            decision_type=decision.decision_type,
            context=checked.context,
            candidates=[
                LoggedCandidate(
                    id=candidate_id,
                    features=features[i],
                    predictions={o: float(p[i]) for o, p in predictions.items()},
                    value=decision.scores[candidate_id],
                )
                for i, candidate_id in enumerate(checked.ids)
            ],
            choice=decision.choice,
            ranking=decision.ranking,
            propensity=decision.propensity,
            exploration=policy.exploration_log,
            model_versions=decision.model_versions,
            policy=decision.policy,
            experiment=decision.experiment,
            arm=decision.arm,
            experiment_phase=assignment.phase if assignment else None,
        )
        self._event_log.append(self._topic, [(decision.decision_id, encode_decision(event))])

    def _use_case(self, name: str) -> UseCaseConfig:
        use_case = self._config.use_cases.get(name)
        if use_case is None:
            raise UnknownUseCaseError(
                f"Unknown use case {name!r}.",
                field="use_case",
                value=name,
                expected=f"one of {sorted(self._config.use_cases)}",
                hint="Declare it under use_cases: in closedloop.yaml, or check its spelling.",
            )
        return use_case


def _decision(
    request: DecideRequest,
    checked: _Checked,
    pick: Pick,
    values: np.ndarray,
    models: UseCaseModels | None,
    assignment: Assignment | None,
) -> Decision:
    """The answer; ``models`` is None when the default policy decided."""
    ids = checked.ids
    decision_type = checked.use_case.decision
    return Decision.model_construct(
        decision_id=uuid.uuid4().hex,
        use_case=request.use_case,
        decision_type=decision_type,
        choice=ids[pick.index],
        ranking=[ids[i] for i in pick.order] if decision_type == "rank" else None,
        scores={candidate_id: float(v) for candidate_id, v in zip(ids, values, strict=True)},
        propensity=pick.propensity,
        model_versions=models.versions if models else {},
        policy="model" if models else "default",
        experiment=assignment.experiment if assignment else None,
        arm=assignment.arm if assignment else None,
        fallback=False,
    )


def _candidate_ids(use_case: UseCaseConfig, request: DecideRequest) -> list[str]:
    count = len(request.candidates)
    if use_case.decision == "binary":
        if count:
            raise InvalidRequestError(
                f"{request.use_case} is a binary (yes/no) decision and takes no candidates; got {count}.",
                field="candidates",
                value=count,
                expected="an empty list",
            )
        return list(BINARY_CANDIDATES)
    if count == 0:
        raise InvalidRequestError(
            f"{request.use_case} needs at least one candidate.",
            field="candidates",
            value=0,
            expected=f"1 to {use_case.max_candidates} candidates",
        )
    if count > use_case.max_candidates:
        raise PayloadTooLargeError(
            f"{count} candidates is more than {request.use_case} allows ({use_case.max_candidates}).",
            field="candidates",
            value=count,
            expected=f"at most {use_case.max_candidates} candidates",
            hint="Pre-filter candidates, or raise max_candidates in closedloop.yaml.",
        )
    ids = [c.id for c in request.candidates]
    if len(set(ids)) != count:
        duplicate = next(i for i in ids if ids.count(i) > 1)
        raise InvalidRequestError(
            f"Candidate id {duplicate!r} appears more than once.",
            field="candidates.id",
            value=duplicate,
            expected="unique candidate ids",
        )
    return ids
