"""What the sync, async and embedded clients share: building requests, reading answers."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import httpx

from closedloop.contracts import FeatureValue, error_from_payload

Features = Mapping[str, FeatureValue]
Candidates = Mapping[str, Features] | Sequence[str] | None
Outcomes = Mapping[str, float | bool]


def decide_payload(
    use_case: str,
    unit_id: str,
    context: Features | None,
    candidates: Candidates,
    *,
    activate: bool = True,
    slots: int | None = None,
) -> dict[str, Any]:
    """The JSON body of a decide request; ``request_id`` makes retries return the same decision."""
    if candidates is None:
        listed: list[dict[str, Any]] = []
    elif isinstance(candidates, Mapping):
        listed = [{"id": str(cid), "features": dict(f)} for cid, f in candidates.items()]
    elif isinstance(candidates, str):
        raise TypeError("candidates must be a mapping of id -> features or a list of ids, not one string")
    else:
        listed = [{"id": str(cid), "features": {}} for cid in candidates]
    return {
        "use_case": use_case,
        "unit_id": str(unit_id),
        "context": dict(context or {}),
        "candidates": listed,
        "request_id": uuid.uuid4().hex,
        "activate": activate,
        **({"slots": slots} if slots is not None else {}),
    }


def feedback_payload(
    decision_id: str, outcomes: Outcomes, timestamp: datetime | None, candidate_id: str | None = None
) -> dict[str, Any]:
    """The JSON of one feedback item; ``feedback_id`` makes a retry count once."""
    payload = {
        "decision_id": decision_id,
        "outcomes": dict(outcomes),
        "timestamp": timestamp.isoformat() if timestamp else None,
        "feedback_id": uuid.uuid4().hex,
    }
    if candidate_id is not None:
        payload["candidate_id"] = candidate_id
    return payload


def raise_for_error(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        payload = response.json()
    except ValueError:
        payload = {"detail": response.text[:200]}
    raise error_from_payload(payload, status=response.status_code)


def is_fallback_id(decision_id: str) -> bool:
    return decision_id.startswith(FALLBACK_PREFIX)


FALLBACK_PREFIX = "fallback-"
