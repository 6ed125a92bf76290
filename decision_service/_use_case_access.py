"""Which use cases the API key of a request may decide and report for."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from closedloop.access import principal_of
from closedloop.contracts import PermissionDeniedError


def allowed_use_cases(scope: Mapping[str, Any]) -> frozenset[str] | None:
    """The use cases the request's key is limited to; None: any (or no keys are required)."""
    key = principal_of(scope)
    return key.use_cases if key is not None else None


def require_use_case(scope: Mapping[str, Any], use_case: str, field: str) -> None:
    allowed = allowed_use_cases(scope)
    if allowed is not None and use_case not in allowed:
        raise PermissionDeniedError(
            f"This API key may not decide for use case {use_case!r}.",
            field=field,
            value=use_case,
            expected=f"one of {sorted(allowed)}",
            hint="Use a key made for that use case: closedloop keys create NAME --scope decide --use-case "
            f"{use_case}.",
        )
