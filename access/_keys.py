"""API keys: how one is made, what is kept of it, and how a presented key is checked.

A key reads ``cl_<key id>_<secret>``. The key id is public (logs, the audit trail and rate
limits name keys by it); only a SHA-256 of the secret is stored. A fast hash is the right one
here, unlike for passwords: the secret is 32 random bytes, so there is nothing to guess by trying
candidates, and checking it costs a microsecond on every request instead of the ~100 ms a slow
password hash would. The comparison is constant-time (`hmac.compare_digest`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass, field, replace
from typing import Any

from closedloop.contracts import SCOPES, Scope

_TOKEN = re.compile(r"^cl_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()


@dataclass(frozen=True)
class ApiKey:
    """What the key store keeps of a key: never the key itself."""

    key_id: str
    name: str
    scopes: frozenset[Scope]
    secret_hash: str
    created_at: float
    use_cases: frozenset[str] | None = None
    """For the ``decide`` scope: the use cases it may decide and report on (None: every one)."""
    revoked_at: float | None = None
    created_by: str = ""

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def allows(self, scope: Scope) -> bool:
        """``admin`` may also do everything ``read`` may; ``decide`` is its own."""
        return scope in self.scopes or (scope == "read" and "admin" in self.scopes)

    def allows_use_case(self, use_case: str) -> bool:
        return self.use_cases is None or use_case in self.use_cases

    def revoked(self, at: float) -> ApiKey:
        return replace(self, revoked_at=at)

    def to_record(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "name": self.name,
            "scopes": sorted(self.scopes),
            "secret_hash": self.secret_hash,
            "created_at": self.created_at,
            "use_cases": None if self.use_cases is None else sorted(self.use_cases),
            "revoked_at": self.revoked_at,
            "created_by": self.created_by,
        }

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ApiKey:
        use_cases = record.get("use_cases")
        return cls(
            key_id=record["key_id"],
            name=record["name"],
            scopes=frozenset(s for s in record["scopes"] if s in SCOPES),
            secret_hash=record["secret_hash"],
            created_at=float(record["created_at"]),
            use_cases=None if use_cases is None else frozenset(use_cases),
            revoked_at=record.get("revoked_at"),
            created_by=record.get("created_by", ""),
        )

    def describe(self) -> dict[str, Any]:
        """The record without its hash: what listings show."""
        return {k: v for k, v in self.to_record().items() if k != "secret_hash"}


@dataclass(frozen=True)
class NewKey:
    """A key just made: ``token`` is shown once, then only its hash exists."""

    key: ApiKey
    token: str = field(repr=False)


def new_key(
    name: str, scopes: frozenset[Scope], *, use_cases: frozenset[str] | None = None, created_by: str = ""
) -> NewKey:
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    key = ApiKey(
        key_id=key_id,
        name=name,
        scopes=scopes,
        secret_hash=_hash(secret),
        created_at=time.time(),
        use_cases=use_cases,
        created_by=created_by,
    )
    return NewKey(key=key, token=f"cl_{key_id}_{secret}")


def parse_token(token: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    match = _TOKEN.match(token)
    return (match.group(1), match.group(2)) if match else None


def secret_matches(key: ApiKey | None, secret: str) -> bool:
    """Whether ``secret`` is ``key``'s, in the same time whether or not the key exists."""
    expected = key.secret_hash if key is not None else _DUMMY_HASH
    return hmac.compare_digest(_hash(secret), expected) and key is not None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()
