"""The gatekeeper: which key a request carries, whether it may use the route, and whether it is
within its rate. Every process holds the key table in memory and re-reads the store every
``access.refresh_seconds`` in a thread, so checking a key costs no round trip and a revoked key
stops working on every replica within that time."""

from __future__ import annotations

import logging
import threading
from collections.abc import Collection

from closedloop.contracts import (
    AccessConfig,
    AuthenticationError,
    ClosedLoopError,
    InfrastructureConfig,
    PermissionDeniedError,
    RateLimitedError,
    Scope,
    ServiceUnavailableError,
)

from ._keys import ApiKey, parse_token, secret_matches
from ._rate_limit import LocalBuckets, RateLimiter, RedisBuckets
from ._store import KeyStore, open_key_store

logger = logging.getLogger(__name__)

_HINT = (
    "Send 'Authorization: Bearer <key>' (Client(url, api_key=...) or CLOSEDLOOP_API_KEY); an "
    "operator makes keys with 'closedloop keys create NAME --scope decide'."
)


class Gatekeeper:
    def __init__(self, store: KeyStore, limiter: RateLimiter, *, refresh_seconds: float = 1.0) -> None:
        self._store = store
        self._limiter = limiter
        self._refresh_seconds = refresh_seconds
        self._keys: dict[str, ApiKey] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refresh()

    @classmethod
    def open(cls, infrastructure: InfrastructureConfig, access: AccessConfig) -> Gatekeeper:
        """On the key store and rate-limit buckets the settings name (Redis, else local)."""
        if infrastructure.redis_url:
            url, prefix = infrastructure.redis_url, infrastructure.key_prefix
            limiter = RateLimiter(access, RedisBuckets.from_url(url, prefix=prefix))
        else:
            limiter = RateLimiter(access, LocalBuckets())
        return cls(open_key_store(infrastructure), limiter, refresh_seconds=access.refresh_seconds)

    # -- the key table ----------------------------------------------------------------------------

    @property
    def keys_required(self) -> bool:
        """Whether requests need a key: once any key was made (revoked ones count, so revoking
        the last key closes the service instead of opening it), or while the store was never read."""
        return self._keys is None or bool(self._keys)

    def refresh(self) -> None:
        try:
            self._keys = self._store.load()
        except ServiceUnavailableError as exc:
            logger.warning("API keys not re-read (%s); the last table read stays in force", exc.message)

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="closedloop-keys", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._refresh_seconds):
            self.refresh()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            self._thread = None

    def close(self) -> None:
        self.stop()
        self._store.close()

    # -- one request ------------------------------------------------------------------------------

    def admit(self, authorization: str | None, needed: Collection[Scope]) -> ApiKey | None:
        """The key a request may go on with (None when no keys are required); raises the 401,
        403, 429 or 503 it gets instead. ``needed``: any one of these scopes will do; empty:
        any valid key."""
        if not self.keys_required:
            return None
        key = self.authenticate(authorization)
        if needed and not any(key.allows(scope) for scope in needed):
            raise PermissionDeniedError(
                f"API key {key.key_id} ({key.name}) has scopes {sorted(key.scopes)}; this route needs "
                f"{' or '.join(sorted(needed))}.",
                field="authorization",
                value=key.key_id,
                expected=f"a key with scope {' or '.join(sorted(needed))}",
                hint="Use a key made with that scope: closedloop keys create NAME --scope "
                f"{sorted(needed)[0]}.",
            )
        wait = self._limiter.wait_for(key.key_id, key.name)
        if wait is not None:
            raise RateLimitedError(
                f"API key {key.key_id} ({key.name}) is over its rate limit.",
                field="authorization",
                value=round(wait, 3),
                expected="fewer requests per second",
                hint="Retry after the Retry-After header's seconds, or raise the key's limit "
                "(access.key_rate_limits in closedloop.yaml).",
            )
        return key

    def authenticate(self, authorization: str | None) -> ApiKey:
        """The active key ``authorization`` ("Bearer <key>") names; raises a 401 (or a 503 while
        the key store was never read) otherwise."""
        if self._keys is None:
            raise ServiceUnavailableError(
                "API keys cannot be checked: the key store has not been read yet.",
                hint="Check that Redis is running; retry the request.",
            )
        if not authorization:
            raise _unauthenticated("No API key was sent.", None)
        scheme, _, token = authorization.partition(" ")
        parsed = parse_token(token.strip()) if scheme.lower() == "bearer" else None
        if parsed is None:
            raise _unauthenticated("The Authorization header does not hold a closedloop API key.", None)
        key_id, secret = parsed
        key = self._keys.get(key_id)
        if not secret_matches(key, secret) or key is None:
            raise _unauthenticated(f"API key {key_id} is not known.", key_id)
        if not key.active:
            raise _unauthenticated(f"API key {key_id} ({key.name}) was revoked.", key_id)
        return key


def _unauthenticated(message: str, key_id: str | None) -> ClosedLoopError:
    return AuthenticationError(
        message, field="authorization", value=key_id, expected="Bearer cl_<key id>_<secret>", hint=_HINT
    )
