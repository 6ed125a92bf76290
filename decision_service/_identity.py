"""Decision ids: random, or derived from the request id, so that a retry and an abandonment name
the decision a request made without asking anyone."""

from __future__ import annotations

import hashlib
import uuid


def request_digest(use_case: str, unit_id: str, request_id: str) -> bytes:
    """16 bytes that the request (use case, unit, request id) determines: its decision id in hex,
    and the seed of its exploration draws."""
    return hashlib.blake2b(f"{use_case}\x00{unit_id}\x00{request_id}".encode(), digest_size=16).digest()


def decision_id_of(use_case: str, unit_id: str, request_id: str | None) -> str:
    """The id of the decision this request makes (a fresh one without a request id)."""
    if request_id is None:
        return uuid.uuid4().hex
    return request_digest(use_case, unit_id, request_id).hex()
