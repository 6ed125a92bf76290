"""Who may call what: the scopes of API keys, and the ``access:`` block of ``closedloop.yaml``.

Keys themselves are not configured here (they are secrets): ``closedloop keys create`` makes
them and the key store keeps their hashes. The YAML sets what is not secret: the rate limits,
by key name, and how soon every replica sees a revoked key.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

Scope = Literal["decide", "read", "admin"]
"""decide: decide, activate, feedback, abandon (optionally limited to listed use cases);
read: use cases, models, reports, metrics; admin: everything read may, and experiments
start/stop, champion pin/rollback, tuning and key management."""

SCOPES: tuple[Scope, ...] = get_args(Scope)

KEY_NAME_PATTERN = r"^[A-Za-z0-9_.-]{1,64}$"


class RateLimit(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    per_second: float = Field(gt=0)
    """Requests per second a key may make on average, summed over every service replica."""
    burst: int | None = Field(None, ge=1)
    """Requests a key may make at once after a quiet spell (the bucket's size); by default one
    second's worth."""

    @property
    def capacity(self) -> int:
        return self.burst if self.burst is not None else max(1, round(self.per_second))


class AccessConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    rate_limit: RateLimit | None = None
    """Every key's limit, unless ``key_rate_limits`` names the key; none: unlimited."""
    key_rate_limits: dict[str, RateLimit] = Field(default_factory=dict)
    """Limits of particular keys, by the name given at ``closedloop keys create NAME``."""
    refresh_seconds: float = Field(1.0, gt=0, le=60)
    """How often each process re-reads the key store: a revoked key stops working on every
    replica within this."""

    def limit_for(self, key_name: str) -> RateLimit | None:
        return self.key_rate_limits.get(key_name, self.rate_limit)
