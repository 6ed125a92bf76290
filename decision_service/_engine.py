"""The decision path: check features, score with the champions, apply the policy, log, answer.

The engine is the whole decision service minus HTTP; `EmbeddedClient` runs it in-process and the
FastAPI app wraps it. It logs every decision and every feedback to the event log before answering.
"""

from __future__ import annotations

import math
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson

from closedloop.contracts import (
    ClosedLoopConfig,
    ClosedLoopError,
    DecideRequest,
    Decision,
    DuplicateFeedbackError,
    FeatureValue,
    FeedbackIn,
    FeedbackResult,
    FeedbackStatus,
    InvalidRequestError,
    PayloadTooLargeError,
    Topics,
    UnknownDecisionError,
    UnknownUseCaseError,
    UseCaseConfig,
    ValueExpression,
)
from closedloop.decision_service._arms import Assignment, ServingPolicy
from closedloop.decision_service._decision_index import DecisionIndex
from closedloop.decision_service._features import BINARY_CANDIDATES, FeatureEncoder
from closedloop.decision_service._metrics import EngineMetrics
from closedloop.decision_service._policy import (
    Pick,
    choose,
    default_policy_values,
    exploration_inputs,
    rank,
)
from closedloop.decision_service._serving_models import RefreshLoop, ServingModels, UseCaseModels
from closedloop.eventlog import EventLog
from closedloop.registry import ModelRegistry

GRACE_SECONDS = 3600.0


class DecisionEngine:
    def __init__(
        self,
        config: ClosedLoopConfig,
        *,
        registry: ModelRegistry,
        event_log: EventLog,
        index: DecisionIndex,
        rng: np.random.Generator | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.config = config
        self.event_log = event_log
        self.index = index
        self.registry = registry
        self.metrics = EngineMetrics()
        self.topics = Topics(config.infrastructure.topic_prefix)
        self._rng = rng or np.random.default_rng()
        self._clock = clock
        self._encoders = {name: FeatureEncoder(uc) for name, uc in config.use_cases.items()}
        # Built once here: outside experiments the policy never changes per decision.
        self._policies = {name: ServingPolicy.of(uc.policy) for name, uc in config.use_cases.items()}
        self._fact_ttl = (
            max(uc.max_window.total_seconds() for uc in config.use_cases.values()) + GRACE_SECONDS
        )
        self.models = ServingModels(
            config, registry, {name: enc.feature_names for name, enc in self._encoders.items()}
        )
        self.models.refresh(force=True)
        self._refresher: RefreshLoop | None = None

    def start_model_refresh(self, interval: float = 0.5) -> None:
        """Poll the registry in the background and hot-swap new champions (stopped by close)."""
        if self._refresher is None:
            self._refresher = RefreshLoop(self.models, interval=interval)
            self._refresher.start()

    def stop_model_refresh(self) -> None:
        if self._refresher is not None:
            self._refresher.stop()
            self._refresher = None

    def feature_names(self, use_case: str) -> list[str]:
        return list(self._encoders[use_case].feature_names)

    def categorical_features(self, use_case: str) -> list[str]:
        return list(self._encoders[use_case].categorical_features)

    def unknown_category_counts(self) -> dict[str, int]:
        return {name: encoder.unknown_categories for name, encoder in self._encoders.items()}

    # -- deciding ---------------------------------------------------------------------------------

    def decide(self, request: DecideRequest) -> Decision:
        started = time.perf_counter()
        use_case, encoder, ids, context, candidates = self._checked(request)
        models = self.models.for_use_case(request.use_case)
        assignment = models.experiment.assign(request.unit_id) if models.experiment else None
        policy = assignment.policy if assignment else self._policies[request.use_case]
        predictions, values, pick = self._apply_policy(
            use_case, policy, encoder, models, context, candidates, ids
        )
        decision = Decision.model_construct(
            decision_id=uuid.uuid4().hex,
            use_case=request.use_case,
            decision_type=use_case.decision,
            choice=ids[pick.index],
            ranking=[ids[i] for i in pick.order] if use_case.decision == "rank" else None,
            scores={candidate_id: float(v) for candidate_id, v in zip(ids, values, strict=True)},
            propensity=pick.propensity,
            model_versions=models.versions if predictions else {},
            policy="model" if predictions else "default",
            experiment=assignment.experiment if assignment else None,
            arm=assignment.arm if assignment else None,
            fallback=False,
        )
        replayed = self._claim_request(request.request_id, decision)
        if replayed is not None:
            return replayed
        self._log_decision(request, policy, assignment, decision, context, candidates, predictions)
        self.index.remember(
            [(self.index.keys.decision(decision.decision_id), request.use_case)], self._fact_ttl
        )
        self.metrics.decisions.labels(request.use_case, decision.policy).inc()
        self.metrics.decide_seconds.labels(request.use_case).observe(time.perf_counter() - started)
        return decision

    def _checked(
        self, request: DecideRequest
    ) -> tuple[
        UseCaseConfig, FeatureEncoder, list[str], dict[str, FeatureValue], list[dict[str, FeatureValue]]
    ]:
        """The use case, its encoder, the candidate ids and the checked features (defaults filled)."""
        use_case = self._use_case(request.use_case)
        encoder = self._encoders[request.use_case]
        ids = self._candidate_ids(use_case, request)
        context = encoder.check_context(request.context)
        candidates = [encoder.check_candidate(c.features, i) for i, c in enumerate(request.candidates)]
        return use_case, encoder, ids, context, candidates

    def _apply_policy(
        self,
        use_case: UseCaseConfig,
        policy: ServingPolicy,
        encoder: FeatureEncoder,
        models: UseCaseModels,
        context: dict[str, FeatureValue],
        candidates: list[dict[str, FeatureValue]],
        ids: list[str],
    ) -> tuple[dict[str, np.ndarray], np.ndarray, Pick]:
        scored = (
            self._model_values(policy.value, encoder, models, context, candidates, len(ids))
            if policy.use_model
            else None
        )
        predictions, values = scored if scored else ({}, default_policy_values(use_case, candidates))
        exploration = policy.exploration
        if use_case.decision == "rank":
            return predictions, values, rank(values, exploration, self._rng)
        scores, greedy = exploration_inputs(
            use_case, values, from_model=bool(predictions), threshold=policy.threshold
        )
        return predictions, values, choose(scores, greedy, exploration, self._rng)

    def _model_values(
        self,
        expression: ValueExpression,
        encoder: FeatureEncoder,
        models: UseCaseModels,
        context: dict[str, FeatureValue],
        candidates: list[dict[str, FeatureValue]],
        count: int,
    ) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
        """Per-outcome predictions and the value function, or None until every outcome it needs
        has a champion."""
        if not expression.names <= models.by_outcome.keys():
            return None
        rows = encoder.encode(context, candidates)
        predictions = {o: m.predict(rows) for o, m in models.by_outcome.items()}
        values = np.broadcast_to(np.asarray(expression.evaluate(predictions), dtype=float), count)
        if not np.all(np.isfinite(values)):
            raise ClosedLoopError(
                f"The value function {expression.source!r} gave a non-finite value.",
                hint="Check for a division by a prediction that can be zero.",
            )
        return predictions, values

    def model_values(self, request: DecideRequest) -> np.ndarray | None:
        """The serving models' value of each candidate, without exploring or logging anything
        (for scoring a policy offline); None while the default policy serves."""
        _, encoder, ids, context, candidates = self._checked(request)
        models = self.models.for_use_case(request.use_case)
        expression = self._policies[request.use_case].value
        scored = self._model_values(expression, encoder, models, context, candidates, len(ids))
        return scored[1] if scored else None

    def _candidate_ids(self, use_case: UseCaseConfig, request: DecideRequest) -> list[str]:
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

    def _claim_request(self, request_id: str | None, decision: Decision) -> Decision | None:
        if request_id is None:
            return None
        key = self.index.keys.request_seen(request_id)
        if self.index.claim([key], self._fact_ttl, value=decision.model_dump_json())[0]:
            return None
        stored = self.index.lookup([key])[0]
        return Decision.model_validate_json(stored) if stored else None

    def _log_decision(
        self,
        request: DecideRequest,
        policy: ServingPolicy,
        assignment: Assignment | None,
        decision: Decision,
        context: dict[str, FeatureValue],
        candidates: list[dict[str, FeatureValue]],
        predictions: dict[str, np.ndarray],
    ) -> None:
        # Built as a plain dict (the shape of DecisionEvent) because validating a model per decision
        # would cost more than scoring it; tests parse logged events back into DecisionEvent.
        ids = list(decision.scores)
        features = candidates or [{} for _ in ids]
        event: dict[str, Any] = {
            "schema_version": 1,
            "event_id": decision.decision_id,
            "use_case": decision.use_case,
            "unit_id": request.unit_id,
            "timestamp": self._clock(),
            "decision_type": decision.decision_type,
            "context": context,
            "candidates": [
                {
                    "id": candidate_id,
                    "features": features[i],
                    "predictions": {o: float(p[i]) for o, p in predictions.items()},
                    "value": decision.scores[candidate_id],
                }
                for i, candidate_id in enumerate(ids)
            ],
            "choice": decision.choice,
            "ranking": decision.ranking,
            "propensity": decision.propensity,
            "exploration": policy.exploration_log,
            "model_versions": decision.model_versions,
            "policy": decision.policy,
            "experiment": decision.experiment,
            "arm": decision.arm,
            "experiment_phase": assignment.phase if assignment else None,
        }
        self.event_log.append(self.topics.decisions, [(decision.decision_id, orjson.dumps(event))])

    def _use_case(self, name: str) -> UseCaseConfig:
        use_case = self.config.use_cases.get(name)
        if use_case is None:
            raise UnknownUseCaseError(
                f"Unknown use case {name!r}.",
                field="use_case",
                value=name,
                expected=f"one of {sorted(self.config.use_cases)}",
                hint="Declare it under use_cases: in closedloop.yaml, or check its spelling.",
            )
        return use_case

    # -- feedback ---------------------------------------------------------------------------------

    def log_feedback(self, items: Sequence[FeedbackIn]) -> list[FeedbackResult]:
        """Check, de-duplicate and log a batch of feedback; one result per item, in order."""
        received = self._clock()
        keys = self.index.keys
        use_cases = self.index.lookup([keys.decision(item.decision_id) for item in items])
        checks = [self._check_feedback(item, name) for item, name in zip(items, use_cases, strict=True)]
        claim_keys: list[str] = []
        for item, check in zip(items, checks, strict=True):
            if isinstance(check, dict):
                claim_keys.append(keys.feedback_seen(check["feedback_id"]))
                claim_keys.extend(keys.outcome_reported(item.decision_id, o) for o in check["outcomes"])
        claimed = iter(self.index.claim(claim_keys, self._fact_ttl))
        results: list[FeedbackResult] = []
        events: list[tuple[str, bytes]] = []
        to_release: list[str] = []
        for item, name, check in zip(items, use_cases, checks, strict=True):
            if not isinstance(check, dict):
                results.append(self._result(item.feedback_id or "", "invalid", check))
                continue
            fresh_id = next(claimed)
            fresh = {o: next(claimed) for o in check["outcomes"]}
            if not fresh_id:
                to_release.extend(keys.outcome_reported(item.decision_id, o) for o, ok in fresh.items() if ok)
                results.append(self._result(check["feedback_id"], "replayed"))
                continue
            new_outcomes = {o: v for o, v in check["outcomes"].items() if fresh[o]}
            if not new_outcomes:
                results.append(self._duplicate(item, check["feedback_id"], list(check["outcomes"])))
                continue
            events.append(self._feedback_event(item, name, check["feedback_id"], new_outcomes, received))
            status: FeedbackStatus = "orphan" if name is None else "accepted"
            results.append(self._result(check["feedback_id"], status, self._orphan_error(item, name)))
        try:
            if events:
                self.event_log.append(self.topics.feedback, events)
        except BaseException:
            self.index.release(claim_keys)
            raise
        if to_release:
            self.index.release(to_release)
        for status, count in Counter(result.status for result in results).items():
            self.metrics.feedback.labels(status).inc(count)
        return results

    def _check_feedback(
        self, item: FeedbackIn, use_case_name: str | None
    ) -> dict[str, Any] | ClosedLoopError:
        use_case = self.config.use_cases.get(use_case_name) if use_case_name else None
        outcomes: dict[str, float] = {}
        for name, raw in item.outcomes.items():
            field = f"outcomes.{name}"
            declared = use_case.outcomes.get(name) if use_case else None
            if use_case is not None and declared is None:
                return InvalidRequestError(
                    f"{name!r} is not an outcome of {use_case_name}.",
                    field=field,
                    value=raw,
                    expected=f"one of {sorted(use_case.outcomes)}",
                )
            value = float(raw)
            if not math.isfinite(value):
                return InvalidRequestError(
                    f"{field} must be a finite number, got {raw!r}.",
                    field=field,
                    value=raw,
                    expected="a finite number",
                )
            if declared is not None and declared.type == "binary" and value not in (0.0, 1.0):
                return InvalidRequestError(
                    f"{field} is a binary outcome and must be 0 or 1 (or true/false), got {raw!r}.",
                    field=field,
                    value=raw,
                    expected="0, 1, true or false",
                )
            outcomes[name] = value
        return {"feedback_id": item.feedback_id or uuid.uuid4().hex, "outcomes": outcomes}

    def _feedback_event(
        self,
        item: FeedbackIn,
        use_case: str | None,
        feedback_id: str,
        outcomes: dict[str, float],
        received: datetime,
    ) -> tuple[str, bytes]:
        timestamp = item.timestamp or received
        if timestamp.tzinfo is None:
            timestamp = timestamp.replace(tzinfo=UTC)
        event = {
            "schema_version": 1,
            "event_id": feedback_id,
            "decision_id": item.decision_id,
            "use_case": use_case,
            "outcomes": outcomes,
            "timestamp": timestamp,
            "received_at": received,
            "orphan": use_case is None,
        }
        return item.decision_id, orjson.dumps(event)

    def _duplicate(self, item: FeedbackIn, feedback_id: str, outcomes: list[str]) -> FeedbackResult:
        error = DuplicateFeedbackError(
            f"Decision {item.decision_id} already has {', '.join(outcomes)} reported; "
            "the first report counts.",
            field=f"outcomes.{outcomes[0]}",
            value=item.outcomes[outcomes[0]],
            expected="one report per outcome and decision",
        )
        return self._result(feedback_id, "duplicate", error)

    @staticmethod
    def _orphan_error(item: FeedbackIn, use_case: str | None) -> ClosedLoopError | None:
        if use_case is not None:
            return None
        return UnknownDecisionError(
            f"No decision {item.decision_id!r} is known (or its attribution window has closed); "
            "the feedback was kept as orphan.",
            field="decision_id",
            value=item.decision_id,
            expected="a decision_id returned by decide() within its outcomes' window",
        )

    @staticmethod
    def _result(
        feedback_id: str, status: FeedbackStatus, error: ClosedLoopError | None = None
    ) -> FeedbackResult:
        return FeedbackResult(
            feedback_id=feedback_id, status=status, error=error.to_payload()["error"] if error else None
        )

    def close(self) -> None:
        self.stop_model_refresh()
        self.event_log.close()
        self.registry.close()
