"""The closedloop SDK: what product code imports.

    from closedloop.sdk import Client

    client = Client("http://decisions.internal:8000", api_key=...)  # or CLOSEDLOOP_API_KEY
    decision = client.decide("home_feed", user.id, context={"country": "de"},
                             candidates={"a": {"price": 3.0}, "b": {"price": 5.0}})
    show(decision.ranking)
    ...
    client.log_feedback(decision.decision_id, {"click": 1})

- `Client` / `AsyncClient`: over HTTP, with retries, a default-policy fallback and feedback batching
- `EmbeddedClient`: the same API in-process (needs ``closedloop[embedded]``)
- `Decision`: what ``decide`` returns; the errors product code may catch are re-exported here
"""

from closedloop.contracts import (
    AuthenticationError,
    ClosedLoopConfig,
    ClosedLoopError,
    ConfigError,
    Decision,
    DuplicateFeedbackError,
    InvalidRequestError,
    PayloadTooLargeError,
    PermissionDeniedError,
    ServiceUnavailableError,
    UnknownDecisionError,
    UnknownUseCaseError,
    load_config,
)

from ._async_client import AsyncClient
from ._client import Client
from ._embedded import EmbeddedClient

__all__ = [
    "AsyncClient",
    "AuthenticationError",
    "Client",
    "ClosedLoopConfig",
    "ClosedLoopError",
    "ConfigError",
    "Decision",
    "DuplicateFeedbackError",
    "EmbeddedClient",
    "InvalidRequestError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "ServiceUnavailableError",
    "UnknownDecisionError",
    "UnknownUseCaseError",
    "load_config",
]
