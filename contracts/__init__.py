"""Contracts shared by every closedloop component: configuration, wire formats, names, errors.

- configuration: `ClosedLoopConfig` and its parts, read by `load_config` / `parse_config`
- wire formats: `DecideRequest`, `Decision`, `FeedbackIn`, and the logged `DecisionEvent`, `FeedbackEvent`
- names: `RegistryKeys`, `DecisionIndexKeys`, `Topics`
- errors: `ClosedLoopError` and its subclasses (see `closedloop.contracts._errors` for the tree)
"""

from closedloop.contracts._config import (
    CategoricalFeature,
    ClosedLoopConfig,
    DecisionType,
    DefaultPolicy,
    EpsilonGreedy,
    Exploration,
    Feature,
    Greedy,
    ModelConfig,
    NumericFeature,
    OutcomeConfig,
    PolicyConfig,
    PromotionGate,
    RetrainTrigger,
    Softmax,
    UseCaseConfig,
)
from closedloop.contracts._durations import parse_duration
from closedloop.contracts._errors import (
    ClosedLoopError,
    ConfigError,
    DuplicateFeedbackError,
    InvalidRequestError,
    ModelIncompatibleError,
    PayloadTooLargeError,
    ServiceUnavailableError,
    UnknownDecisionError,
    UnknownUseCaseError,
    error_from_payload,
    invalid_request_from,
)
from closedloop.contracts._loading import load_config, parse_config
from closedloop.contracts._names import DecisionIndexKeys, RegistryKeys, Topics
from closedloop.contracts._settings import ENVIRONMENT_VARIABLES, InfrastructureConfig
from closedloop.contracts._value_expression import ValueExpression
from closedloop.contracts._wire import (
    EVENT_SCHEMA_VERSION,
    MAX_FEEDBACK_BATCH,
    CandidateIn,
    CandidateLog,
    DecideRequest,
    Decision,
    DecisionEvent,
    FeatureValue,
    FeedbackBatch,
    FeedbackBatchResult,
    FeedbackEvent,
    FeedbackIn,
    FeedbackResult,
    FeedbackStatus,
)

__all__ = [
    "CandidateIn",
    "CandidateLog",
    "CategoricalFeature",
    "ClosedLoopConfig",
    "ClosedLoopError",
    "ConfigError",
    "DecideRequest",
    "Decision",
    "DecisionEvent",
    "DecisionIndexKeys",
    "DecisionType",
    "DefaultPolicy",
    "DuplicateFeedbackError",
    "ENVIRONMENT_VARIABLES",
    "EVENT_SCHEMA_VERSION",
    "EpsilonGreedy",
    "Exploration",
    "Feature",
    "FeatureValue",
    "FeedbackBatch",
    "FeedbackBatchResult",
    "FeedbackEvent",
    "FeedbackIn",
    "FeedbackResult",
    "FeedbackStatus",
    "Greedy",
    "InfrastructureConfig",
    "InvalidRequestError",
    "MAX_FEEDBACK_BATCH",
    "ModelConfig",
    "ModelIncompatibleError",
    "NumericFeature",
    "OutcomeConfig",
    "PayloadTooLargeError",
    "PolicyConfig",
    "PromotionGate",
    "RegistryKeys",
    "RetrainTrigger",
    "ServiceUnavailableError",
    "Softmax",
    "Topics",
    "UnknownDecisionError",
    "UnknownUseCaseError",
    "UseCaseConfig",
    "ValueExpression",
    "error_from_payload",
    "invalid_request_from",
    "load_config",
    "parse_config",
    "parse_duration",
]
