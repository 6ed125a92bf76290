"""The decision path: check features, score with the champions, apply the policy, log, answer."""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from closedloop.contracts import (
    ClosedLoopConfig,
    DecideInput,
    Decision,
    DecisionEvent,
    FeatureValue,
    InvalidRequestError,
    LoggedCandidate,
    LoggedSlot,
    PayloadTooLargeError,
    RequestConflictError,
    ServiceUnavailableError,
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
    exploration_record,
    model_values,
    pick_action,
)

from ._activations import Activations
from ._decision_index import Commit, DecisionIndex, Seen, decision_fact
from ._faults import crash_point
from ._identity import request_digest
from ._metrics import EngineMetrics
from ._serving_models import ServingModels, UseCaseModels

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoggedDecision:
    """A decision logged but not yet in the index: ``write`` is what the index must take."""

    request: DecideInput
    decision: Decision
    write: Commit
    started: float


@dataclass(frozen=True, slots=True)
class _Checked:
    """A request checked against its use case: candidate ids and features, defaults filled."""

    use_case_name: str
    use_case: UseCaseConfig
    encoder: FeatureEncoder
    ids: list[str]
    context: dict[str, FeatureValue]
    candidates: list[dict[str, FeatureValue]]
    rows: np.ndarray


class Decider:
    def __init__(
        self,
        config: ClosedLoopConfig,
        *,
        models: ServingModels,
        index: DecisionIndex,
        event_log: EventLog,
        activations: Activations,
        metrics: EngineMetrics,
        fact_ttl: Mapping[str, float],
        rng: np.random.Generator,
        clock: Callable[[], datetime],
    ) -> None:
        self._config = config
        self._models = models
        self._index = index
        self._event_log = event_log
        self._activations = activations
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

    def decide(self, request: DecideInput) -> Decision:
        """Decide, log the decision, then tell the index; a retry (the same ``request_id``) gets
        the first answer back, and is safe at any point of a crash: its decision id and its
        exploration draws come from the request id, so a decision logged twice is logged the same
        twice, and counted once (by decision id) by the trainer and the evaluator."""
        logged = self.log_decision(request)
        if isinstance(logged, Decision):
            return logged
        try:
            fresh: list[bool] | ServiceUnavailableError = self._index.commit(*logged.write)
        except ServiceUnavailableError as exc:
            fresh = exc
        return self.indexed(logged, fresh)

    def log_decision(self, request: DecideInput, *, seen: Seen | None = None) -> Decision | LoggedDecision:
        """Decide and log: the decision and the index write it still needs (`indexed` finishes
        it), or the answer given before to the same request id. ``seen``: what the index holds
        under the request id, looked up by the caller (`IndexBatcher`); else looked up here."""
        started = time.perf_counter()
        checked = self._checked(request)
        replayed = self._replayed(request, seen)
        if replayed is not None:
            return replayed
        models = self._models.for_use_case(request.use_case)
        assignment = models.experiment.assign(request.unit_id) if models.experiment else None
        policy = assignment.policy if assignment else self._policies[request.use_case]
        decision_id, rng = self._identity(request)
        predictions, values, pick = self._apply_policy(checked, policy, models, rng, request.slots)
        decision = _decision(
            decision_id, request, checked, pick, values, models if predictions else None, assignment
        )
        crash_point("decide.checked")
        decided_at = self._clock()
        exploration = exploration_record(policy, pick)
        self._log(request, checked, exploration, assignment, decision, predictions, decided_at)
        crash_point("decide.logged")
        return LoggedDecision(request, decision, self._index_write(request, decision, decided_at), started)

    def indexed(self, logged: LoggedDecision, fresh: list[bool] | ServiceUnavailableError) -> Decision:
        """The answer, once the index took the decision's write (``fresh``: whether each claim was
        new) or could not be reached; the decision is logged already either way."""
        request, decision = logged.request, logged.decision
        if isinstance(fresh, ServiceUnavailableError):
            self._metrics.index_unavailable.labels("decide").inc()
            logger.warning(
                "decision %s is logged; the index was not told: %s", decision.decision_id, fresh.message
            )
        elif logged.write[1] and not fresh[0]:  # a concurrent retry of the same request answered first
            decision = self._first_answer(request, decision, logged.write[1][0][0])
        crash_point("decide.indexed")
        self._metrics.count_decision(
            request.use_case,
            decision.policy,
            active=request.activate,
            seconds=time.perf_counter() - logged.started,
        )
        return decision

    def _identity(self, request: DecideInput) -> tuple[str, np.random.Generator]:
        """The decision id and the random draws: from the request id when there is one."""
        if request.request_id is None:
            return secrets.token_hex(16), self._rng  # 128 random bits, as a UUID4 has 122
        digest = request_digest(request.use_case, request.unit_id, request.request_id)
        return digest.hex(), np.random.default_rng(int.from_bytes(digest[:8], "big"))

    def _replayed(self, request: DecideInput, seen: Seen | None) -> Decision | None:
        """The answer already given to this request id, if any (409 if another request used it)."""
        if request.request_id is None:
            return None
        if seen is None:
            try:
                seen = Seen(self._index.lookup([self._index.keys.request_seen(request.request_id)])[0])
            except ServiceUnavailableError as exc:
                seen = Seen(exc)
        if isinstance(seen.value, ServiceUnavailableError):  # a replay then decides again, the same way
            logger.warning("deciding without the replay check: %s", seen.value.message)
            return None
        return _stored_answer(seen.value, request) if seen.value else None

    def _index_write(self, request: DecideInput, decision: Decision, decided_at: datetime) -> Commit:
        """What the index must learn of the decision (for its feedback), and the claim of its
        request id."""
        facts = [
            (
                self._index.keys.decision(decision.decision_id),
                decision_fact(request.use_case, decided_at, _shown(decision)),
            )
        ]
        claims = []
        if request.request_id is not None:
            claims.append(
                (self._index.keys.request_seen(request.request_id), _stored_form(request.unit_id, decision))
            )
        return facts, claims, self._fact_ttl[request.use_case]

    def _first_answer(self, request: DecideInput, decision: Decision, claim: str) -> Decision:
        """The answer a concurrent retry of the same request gave first."""
        first = self._index.lookup([claim])[0]
        try:
            return _stored_answer(first, request) if first else decision
        except RequestConflictError:  # another request took the id meanwhile: ours is logged,
            self._activations.abandon_logged(decision.decision_id, request.use_case)  # not shown
            raise

    def model_values(self, request: DecideInput) -> np.ndarray | None:
        """The serving models' value of each candidate, without exploring or logging anything
        (for scoring a policy offline); None while the default policy serves."""
        checked = self._checked(request)
        models = self._models.for_use_case(request.use_case)
        scored = self._model_values(checked, self._policies[request.use_case], models)
        return scored[1] if scored else None

    def _checked(self, request: DecideInput) -> _Checked:
        use_case = self._use_case(request.use_case)
        encoder = self._encoders[request.use_case]
        ids = _candidate_ids(use_case, request)
        context, candidates, rows = encoder.checked_rows(
            request.context, [c.features for c in request.candidates]
        )
        return _Checked(request.use_case, use_case, encoder, ids, context, candidates, rows)

    def _apply_policy(
        self,
        checked: _Checked,
        policy: ServingPolicy,
        models: UseCaseModels,
        rng: np.random.Generator,
        slots: int | None,
    ) -> tuple[dict[str, np.ndarray], np.ndarray, Pick]:
        scored = self._model_values(checked, policy, models) if policy.use_model else None
        predictions: dict[str, np.ndarray] = {}
        if scored is None:
            values = default_policy_values(checked.use_case, checked.candidates)
        else:
            predictions, values = scored
        pick = pick_action(
            checked.use_case,
            policy,
            values,
            from_model=bool(predictions),
            rng=rng,
            experience=models.experience,
            slots=slots,
        )
        return predictions, values, pick

    def _model_values(
        self, checked: _Checked, policy: ServingPolicy, models: UseCaseModels
    ) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
        if not policy.value.names <= models.by_outcome.keys():
            return None  # before encoding: the default policy needs no rows
        scored = model_values(policy.value, models.by_outcome, checked.rows)
        if scored is not None and not np.isfinite(scored[1]).all():
            # e.g. a ratio whose denominator's prediction is 0: this decision falls back to the
            # default policy (the value function was checked finite on ordinary predictions)
            self._metrics.value_not_finite.labels(checked.use_case_name).inc()
            logger.warning(
                "the value function %r gave a non-finite value; the default policy decides",
                policy.value.source,
            )
            return None
        return scored

    def _log(
        self,
        request: DecideInput,
        checked: _Checked,
        exploration: dict[str, Any],
        assignment: Assignment | None,
        decision: Decision,
        predictions: dict[str, np.ndarray],
        decided_at: datetime,
    ) -> None:
        features = checked.candidates or [{} for _ in checked.ids]
        event = DecisionEvent(
            event_id=decision.decision_id,
            use_case=decision.use_case,
            unit_id=request.unit_id,
            timestamp=decided_at,
            decision_type=decision.decision_type,
            context=checked.context,
            candidates=[
                LoggedCandidate(
                    id=candidate_id,
                    features=candidate_features,
                    predictions=predicted,
                    value=value,
                    probability=probability,
                )
                for candidate_id, candidate_features, predicted, value, probability in zip(
                    checked.ids,
                    features,
                    _per_candidate(predictions, len(checked.ids)),
                    decision.scores.values(),  # in candidate order (see _decision)
                    decision.probabilities.values(),
                    strict=True,
                )
            ],
            choice=decision.choice,
            ranking=decision.ranking,
            propensity=decision.propensity,
            exploration=exploration,
            model_versions=decision.model_versions,
            policy=decision.policy,
            experiment=decision.experiment,
            arm=decision.arm,
            experiment_phase=assignment.phase if assignment else None,
            active=decision.active,
            slots=_logged_slots(decision),
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


def _per_candidate(predictions: dict[str, np.ndarray], count: int) -> list[dict[str, float]]:
    """Outcome -> prediction, one mapping per candidate (empty ones while the default decides)."""
    if len(predictions) == 1:  # the usual: one outcome, one dict built per candidate from a list
        ((outcome, predicted),) = predictions.items()
        return [{outcome: p} for p in predicted.tolist()]
    columns = {outcome: p.tolist() for outcome, p in predictions.items()}
    return [{outcome: p[i] for outcome, p in columns.items()} for i in range(count)]


def _shown(decision: Decision) -> list[str]:
    """The candidates the product shows: a ranking's shown slots (its top, without ``slots``),
    a choice; none for binary decisions."""
    if decision.decision_type == "binary" or decision.choice is None:
        return []
    if decision.slot_propensities is not None and decision.ranking is not None:
        return decision.ranking[: len(decision.slot_propensities)]
    return [decision.choice]


def _logged_slots(decision: Decision) -> list[LoggedSlot] | None:
    if decision.slot_propensities is None or decision.ranking is None:
        return None
    return [
        LoggedSlot(candidate=candidate, propensity=propensity)
        for candidate, propensity in zip(decision.ranking, decision.slot_propensities, strict=False)
    ]


def _stored_form(unit_id: str, decision: Decision) -> str:
    """What the index keeps under a request id: the answer, and whom it was for."""
    return json.dumps({"unit_id": unit_id, "decision": decision.model_dump(mode="json")})


def _stored_answer(stored: str, request: DecideInput) -> Decision:
    kept = json.loads(stored)
    decision = Decision.model_validate(kept["decision"])
    if decision.use_case != request.use_case or kept["unit_id"] != request.unit_id:
        raise RequestConflictError(
            f"request_id {request.request_id!r} was already used by a request of use case "
            f"{decision.use_case!r} for unit {kept['unit_id']!r}.",
            field="request_id",
            value=request.request_id,
            expected="a request_id used again only to retry the same request (same use case and unit)",
            hint="Give every new request an id of its own (the SDK does: a fresh UUID per decide).",
        )
    return decision


def _decision(
    decision_id: str,
    request: DecideInput,
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
        decision_id=decision_id,
        use_case=request.use_case,
        decision_type=decision_type,
        choice=ids[pick.index],
        ranking=[ids[i] for i in pick.order] if decision_type == "rank" else None,
        scores=dict(zip(ids, values.tolist(), strict=True)),
        propensity=pick.propensity,
        slot_propensities=pick.slot_propensities,
        probabilities=dict(zip(ids, pick.probabilities.tolist(), strict=True)),
        model_versions=models.versions if models else {},
        policy="model" if models else "default",
        experiment=assignment.experiment if assignment else None,
        arm=assignment.arm if assignment else None,
        fallback=False,
        active=request.activate,
    )


def _candidate_ids(use_case: UseCaseConfig, request: DecideInput) -> list[str]:
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
