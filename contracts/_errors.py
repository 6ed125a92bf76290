"""closedloop's exceptions, shared by every component and carried across HTTP.

The hierarchy::

    ClosedLoopError                  base: a message and a hint on how to fix it
    ├── ConfigError                  a closedloop.yaml that does not validate (file, field path)
    ├── InvalidRequestError          422: a field of a request is missing, mistyped or out of range
    │   ├── PayloadTooLargeError     413: a body or a candidate list over the configured limit
    │   ├── RouteNotFoundError       404: a path the service does not serve
    │   ├── MethodNotAllowedError    405: a method the path does not take
    │   └── UnknownUseCaseError      404: the use case is not declared in the configuration
    ├── UnknownDecisionError         404: feedback names a decision the service never made (kept as orphan)
    ├── DuplicateFeedbackError       409: an outcome of a decision was already reported (counted once)
    ├── RequestConflictError         409: a request_id reused by another request (use case or unit)
    ├── ModelIncompatibleError       a registry model whose features do not match the use case
    ├── ExperimentError              409: an experiment that cannot start, stop or be analysed as asked
    │   └── UnknownExperimentError   404: no experiment of that name is declared or recorded
    ├── TuningError                  409: a tuning run that cannot start, resume or be reported as asked
    ├── AuthenticationError          401: no API key, or one that is unknown, malformed or revoked
    ├── PermissionDeniedError        403: a valid API key without the scope (or use case) the route needs
    ├── RateLimitedError             429: the key's requests are over its rate limit (``retry_after``)
    ├── EventFormatError             a logged record this version cannot read (see `_events`)
    ├── FeedbackQueueFullError       the SDK's feedback queue is full (raised in product code, on request)
    └── ServiceUnavailableError      503: the service or one of its stores cannot be reached

The decision service turns each error into its HTTP status and a JSON body (`to_payload`), and
the SDK rebuilds the same class from that body (`error_from_payload`), so product code can catch
`UnknownUseCaseError` whether it runs embedded or over HTTP. A subclass that declares a ``code``
of its own is registered for that when it is defined.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

_BY_CODE: dict[str, type[ClosedLoopError]] = {}
"""Wire code -> error class, filled as each class is defined."""


class ClosedLoopError(Exception):
    """Base of every closedloop error: what went wrong, and how to fix it."""

    http_status: ClassVar[int] = 500
    code: ClassVar[str] = "internal_error"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Every class with a code of its own is rebuilt from its wire form: none can be forgotten.
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:
            _BY_CODE.setdefault(cls.code, cls)

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        field: str | None = None,
        value: Any = None,
        expected: str | None = None,
    ) -> None:
        self.message = message
        self.hint = hint
        self.field = field
        self.value = value
        self.expected = expected
        super().__init__(self._render())

    def _render(self) -> str:
        text = self.message
        if self.hint:
            text += f" Hint: {self.hint}"
        return text

    def to_payload(self) -> dict[str, Any]:
        """The JSON body the service sends for this error (every string valid UTF-8: a request's
        lone surrogate is echoed escaped, not sent raw)."""
        return {
            "error": {
                "code": self.code,
                "type": type(self).__name__,
                "message": _utf8(self.message),
                "hint": _utf8(self.hint),
                "field": _utf8(self.field),
                "value": _json_safe(self.value),
                "expected": _utf8(self.expected),
            }
        }


_BY_CODE[ClosedLoopError.code] = ClosedLoopError


class ConfigError(ClosedLoopError):
    """A configuration file that cannot be read or does not validate."""

    code = "invalid_config"


class InvalidRequestError(ClosedLoopError):
    """A request field that is missing, mistyped or out of range."""

    http_status = 422
    code = "invalid_request"


class PayloadTooLargeError(InvalidRequestError):
    """A request body, or its list of candidates, over the configured limit."""

    http_status = 413
    code = "payload_too_large"


class RouteNotFoundError(InvalidRequestError):
    """A path the service does not serve."""

    http_status = 404
    code = "route_not_found"


class MethodNotAllowedError(InvalidRequestError):
    """A method the path does not take (GET for a POST route, say)."""

    http_status = 405
    code = "method_not_allowed"


class UnknownUseCaseError(InvalidRequestError):
    """A use case name that the configuration does not declare."""

    http_status = 404
    code = "unknown_use_case"


class UnknownDecisionError(ClosedLoopError):
    """Feedback for a decision id the service has no record of; the feedback is kept as orphan."""

    http_status = 404
    code = "unknown_decision"


class DuplicateFeedbackError(ClosedLoopError):
    """An outcome that was already reported for this decision; the first report counts."""

    http_status = 409
    code = "duplicate_feedback"


class RequestConflictError(ClosedLoopError):
    """An idempotency key (``request_id``) already used by a different request."""

    http_status = 409
    code = "request_conflict"


class ModelIncompatibleError(ClosedLoopError):
    """A model in the registry whose feature names do not match its use case."""

    code = "model_incompatible"


class ExperimentError(ClosedLoopError):
    """An experiment that cannot be started, stopped or analysed as asked."""

    http_status = 409
    code = "experiment_error"


class TuningError(ClosedLoopError):
    """A tuning run that cannot be started, resumed or reported as asked."""

    http_status = 409
    code = "tuning_error"


class UnknownExperimentError(ExperimentError):
    """No experiment of that name is declared in the configuration or recorded in the registry."""

    http_status = 404
    code = "unknown_experiment"


class AuthenticationError(ClosedLoopError):
    """No API key, or a key that is malformed, unknown or revoked."""

    http_status = 401
    code = "unauthenticated"


class PermissionDeniedError(ClosedLoopError):
    """A valid API key that lacks the scope, or the use case, a route needs."""

    http_status = 403
    code = "permission_denied"


class RateLimitedError(ClosedLoopError):
    """Requests of one API key over its rate limit; ``value`` is the seconds to wait
    (the response's ``Retry-After``)."""

    http_status = 429
    code = "rate_limited"

    @property
    def retry_after(self) -> float:
        return float(self.value) if isinstance(self.value, (int, float)) else 1.0


class FeedbackQueueFullError(ClosedLoopError):
    """The SDK's feedback queue is full and the client was told to raise (``on_full="raise"``)."""

    http_status = 503
    code = "feedback_queue_full"


class ServiceUnavailableError(ClosedLoopError):
    """The decision service, or a store it needs, cannot be reached right now."""

    http_status = 503
    code = "service_unavailable"


def error_from_payload(payload: Mapping[str, Any], *, status: int) -> ClosedLoopError:
    """Rebuild the error a service response carries; unknown bodies become `ClosedLoopError`."""
    body = payload.get("error") if isinstance(payload, Mapping) else None
    if not isinstance(body, Mapping):
        return ClosedLoopError(f"The decision service answered HTTP {status}: {payload!r}")
    cls = _BY_CODE.get(str(body.get("code")), ClosedLoopError)
    return cls(
        str(body.get("message", f"HTTP {status}")),
        hint=body.get("hint"),
        field=body.get("field"),
        value=body.get("value"),
        expected=body.get("expected"),
    )


def _utf8(text: str | None) -> str | None:
    if text is None or text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _json_safe(value: Any) -> Any:
    if isinstance(value, str):
        return _utf8(value)
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
        return f"an integer of {len(str(abs(value)))} digits"
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if value == value and abs(value) != float("inf") else repr(value)
    text = repr(value)
    return text if len(text) <= 200 else text[:197] + "..."


def invalid_request_from(errors: Sequence[Any]) -> InvalidRequestError:
    """One `InvalidRequestError` naming the first field pydantic (or FastAPI) refused."""
    error = errors[0]
    location = [str(part) for part in error.get("loc", ()) if part != "body"]
    field = ".".join(location) or "body"
    if error.get("type") == "json_invalid":
        return InvalidRequestError(
            f"The request body is not valid JSON: {error.get('msg')}.", field="body", expected="a JSON object"
        )
    got = error.get("input")
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return InvalidRequestError(
        f"{field}: {error.get('msg')}{more}.",
        field=field,
        value=None if isinstance(got, (dict, list)) else got,
        expected=_EXPECTED.get(str(error.get("type", "")), str(error.get("msg", ""))),
    )


_EXPECTED = {
    "missing": "this field to be present",
    "extra_forbidden": "no such field (check its spelling)",
    "string_type": "a string",
    "float_parsing": "a number",
    "float_type": "a number",
    "list_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
    "string_too_short": "a non-empty string",
    "string_too_long": "a shorter string",
    "too_short": "a non-empty list",
    "too_long": "a shorter list",
}
