"""Decision ids derived from the request id, so that a retry and an abandonment name the decision
a request made without asking anyone (a request without an id gets a random one)."""

from __future__ import annotations

import hashlib


def request_digest(use_case: str, unit_id: str, request_id: str) -> bytes:
    """16 bytes that the request (use case, unit, request id) determines: its decision id in hex,
    and the seed of its exploration draws."""
    return hashlib.blake2b(f"{use_case}\x00{unit_id}\x00{request_id}".encode(), digest_size=16).digest()


def decision_id_of(use_case: str, unit_id: str, request_id: str) -> str:
    """The id of the decision this request makes."""
    return request_digest(use_case, unit_id, request_id).hex()
