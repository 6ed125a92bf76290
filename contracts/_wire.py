"""Wire formats: the HTTP API of the decision service (the logged events are in `_events`).

Requests are checked twice: here for shape (types, sizes), and by the decision engine against the
use case's declared features, so that an error can name ``context.country`` or
``candidates[3].features.price`` and say what was expected.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from ._events import DecisionType, FeatureValue, PolicyKind


def _outcome_value(value: object) -> float:
    # Strings such as "yes" are refused rather than coerced: an outcome is a number or a boolean.
    if isinstance(value, (bool, int, float)):
        try:
            return float(value)
        except OverflowError:
            digits = len(str(value))
            raise ValueError(f"expected a finite number, got an integer of {digits} digits") from None
    raise ValueError(f"expected a number or true/false, got {type(value).__name__} {value!r}")


OutcomeValue = Annotated[float, BeforeValidator(_outcome_value)]
MAX_FEEDBACK_BATCH = 10_000


class WireModel(BaseModel):
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


class CandidateIn(WireModel):
    id: str = Field(min_length=1, max_length=256)
    features: dict[str, FeatureValue] = Field(default_factory=dict)


class DecideRequest(WireModel):
    use_case: str = Field(min_length=1, max_length=64)
    unit_id: str = Field(min_length=1, max_length=256)
    """Who or what the decision is for (a user, a session); experiment arms are assigned by it."""
    context: dict[str, FeatureValue] = Field(default_factory=dict)
    candidates: list[CandidateIn] = Field(default_factory=list)
    request_id: str | None = Field(None, max_length=128)
    """Idempotency key: a retried request with the same id gets the same decision back."""
    slots: int | None = Field(None, ge=1, le=1000)
    """Rankings: how many of the ranking are shown. Each shown slot is explored in turn and logged
    with its exact propensity given the slots above it; without it, only the top slot is."""
    activate: bool = True
    """False: log the decision as inactive, for a decision that may not be shown (a page below
    the fold); it counts once ``POST /v1/activate`` or its first feedback names it."""


class Decision(WireModel):
    """What ``decide()`` returns to product code."""

    decision_id: str
    use_case: str
    decision_type: DecisionType
    choice: str | None
    """choose: the chosen candidate id; binary: "yes" or "no"; rank: the top candidate id."""
    ranking: list[str] | None = None
    """rank: every candidate id, best first."""
    scores: dict[str, float]
    """The policy's value of each candidate (for binary: of "yes" and "no")."""
    propensity: float
    """Probability the policy had of logging this choice (of the top slot, for rankings)."""
    slot_propensities: list[float] | None = None
    """Rankings with ``slots``: each shown slot's propensity, given the slots above it."""
    probabilities: dict[str, float] = Field(default_factory=dict)
    """Every candidate's probability of being chosen (placed first): the whole distribution the
    exploration drew from (for binary: of "no" and "yes")."""
    model_versions: dict[str, str]
    """outcome -> model version used; empty while the default policy serves."""
    policy: PolicyKind
    experiment: str | None = None
    arm: str | None = None
    fallback: bool = False
    """True when the SDK could not reach the service and applied the default policy itself."""
    active: bool = True
    """False for ``decide(..., activate=False)`` until activated."""


_EARLIEST = datetime(2000, 1, 1)


def _plausible_time(value: datetime | None) -> datetime | None:
    if value is not None and value.replace(tzinfo=None) < _EARLIEST:
        raise ValueError(f"expected a time after {_EARLIEST:%Y-%m-%d}, got {value.isoformat()}")
    return value


class FeedbackIn(WireModel):
    decision_id: str = Field(min_length=1, max_length=128)
    outcomes: dict[str, OutcomeValue] = Field(min_length=1)
    timestamp: Annotated[datetime | None, AfterValidator(_plausible_time)] = None
    """When the outcome happened (not before its decision); defaults to when the service received it."""
    feedback_id: str | None = Field(None, min_length=1, max_length=128)
    """Idempotency key: retries with the same id are accepted once."""
    candidate_id: str | None = Field(None, min_length=1, max_length=256)
    """Rankings: the shown candidate the outcome is about (its slot is the one it was shown in);
    without it, the report is about the top slot. choose: the chosen candidate, if sent."""


class FeedbackBatch(WireModel):
    items: list[FeedbackIn] = Field(min_length=1, max_length=MAX_FEEDBACK_BATCH)


FeedbackStatus = Literal["accepted", "replayed", "orphan", "duplicate", "invalid", "unverified", "forbidden"]


class FeedbackResult(WireModel):
    feedback_id: str
    status: FeedbackStatus
    """accepted; replayed: a retry of an accepted id; orphan: unknown decision, kept;
    duplicate: the outcome was already reported, not counted again; invalid: see error;
    unverified: logged while the decision index was unreachable, without the checks that need it
    (the trainer and the evaluator count it once, by decision id, as they count any report);
    forbidden: a decision of a use case the API key may not report on, not logged."""
    error: dict[str, object] | None = None


class FeedbackBatchResult(WireModel):
    results: list[FeedbackResult]


class ActivateRequest(WireModel):
    decision_id: str = Field(min_length=1, max_length=128)
    """A decision made with ``activate=False`` that the product has now shown."""


ActivationStatus = Literal["activated", "unverified"]


class ActivationResult(WireModel):
    decision_id: str
    status: ActivationStatus
    """activated; unverified: logged while the decision index was unreachable, unchecked (the
    trainer and the evaluator apply it if the decision is in the log)."""


class AbandonedRequest(WireModel):
    """A decide request whose answer the SDK never used (it timed out and used its fallback)."""

    use_case: str = Field(min_length=1, max_length=64)
    unit_id: str = Field(min_length=1, max_length=256)
    request_id: str = Field(min_length=1, max_length=128)


class AbandonBatch(WireModel):
    items: list[AbandonedRequest] = Field(min_length=1, max_length=MAX_FEEDBACK_BATCH)


class AbandonResult(WireModel):
    abandoned: int
    """How many abandonments were logged (each names the decision its request made, if any)."""


class ErrorDetail(WireModel):
    code: str
    """Stable machine-readable code, e.g. ``invalid_request``, ``unknown_use_case``."""
    type: str
    """The closedloop error class, rebuilt by the SDK."""
    message: str
    hint: str | None = None
    """How to fix it."""
    field: str | None = None
    """The request field at fault, e.g. ``candidates[3].features.price``."""
    value: object = None
    """The value sent (shortened, and escaped where it was not valid text)."""
    expected: str | None = None


class ErrorBody(WireModel):
    """Every error the service answers: 4xx for the request, 5xx for the service."""

    error: ErrorDetail


class FeedbackErrorBody(ErrorBody):
    """A single report refused (orphan, duplicate, invalid): the error, and the report's result."""

    feedback_id: str
    status: FeedbackStatus
