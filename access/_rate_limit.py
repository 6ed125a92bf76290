"""Per-key rate limits: one token bucket per key, shared by every replica through Redis.

Asking Redis on every request would add a round trip to each decision. Instead each process
leases a few tokens at a time (about 50 ms of the key's rate) from the shared bucket and spends
them locally; a lease unused after `LEASE_SECONDS` is dropped. Over all replicas a key gets its
rate give or take one lease per replica, for one Redis call per lease instead of per request
(bench/http_service.py --auth measures what checking costs a decision). Without Redis, or while
it cannot be reached, each process keeps the buckets itself (limits then hold per process).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from closedloop.contracts import AccessConfig, AccessKeys, RateLimit

if TYPE_CHECKING:
    import redis

logger = logging.getLogger(__name__)

LEASE_SECONDS = 1.0
_LEASE_FRACTION = 0.05

# Refill by elapsed time (Redis's own clock, so replicas' clocks do not matter), grant up to
# ARGV[3] tokens, and say how long until one is there when none is.
_TAKE = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = capacity
  at = now
end
tokens = math.min(capacity, tokens + math.max(0, now - at) * rate)
local granted = math.min(want, math.floor(tokens))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(capacity / rate * 1000) + 1000)
if granted > 0 then
  return {granted, 0}
end
return {0, math.ceil((1 - tokens) / rate * 1000)}
"""


class Buckets(Protocol):
    def take(self, key_id: str, want: int, limit: RateLimit) -> tuple[int, float]:
        """Up to ``want`` tokens of the key's bucket: (granted, seconds until one is there)."""
        ...


class LocalBuckets:
    """Token buckets in this process."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._state: dict[str, tuple[float, float]] = {}

    def take(self, key_id: str, want: int, limit: RateLimit) -> tuple[int, float]:
        now = self._clock()
        tokens, at = self._state.get(key_id, (float(limit.capacity), now))
        tokens = min(float(limit.capacity), tokens + (now - at) * limit.per_second)
        granted = min(want, math.floor(tokens))
        self._state[key_id] = (tokens - granted, now)
        if granted > 0:
            return granted, 0.0
        return 0, (1 - (tokens - granted)) / limit.per_second


class RedisBuckets:
    """Token buckets in Redis, with this process's own buckets while Redis cannot be reached."""

    def __init__(self, client: redis.Redis, *, prefix: str) -> None:
        from redis.exceptions import ConnectionError, TimeoutError

        self._down = (ConnectionError, TimeoutError)
        self._keys = AccessKeys(prefix)
        self._take = client.register_script(_TAKE)
        self._local = LocalBuckets()
        self._warned = False

    @classmethod
    def from_url(cls, url: str, *, prefix: str) -> RedisBuckets:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        return cls(client, prefix=prefix)

    def take(self, key_id: str, want: int, limit: RateLimit) -> tuple[int, float]:
        try:
            granted, wait_ms = self._take(
                keys=[self._keys.rate_bucket(key_id)], args=[limit.per_second, limit.capacity, want]
            )
        except self._down as exc:
            if not self._warned:
                logger.warning("rate limits held per process while Redis cannot be reached: %s", exc)
                self._warned = True
            return self._local.take(key_id, want, limit)
        self._warned = False
        return int(granted), int(wait_ms) / 1000


@dataclass
class _Lease:
    tokens: int
    expires: float


class RateLimiter:
    """Whether a key may make one more request now."""

    def __init__(
        self, access: AccessConfig, buckets: Buckets, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._access = access
        self._buckets = buckets
        self._clock = clock
        self._leases: dict[str, _Lease] = {}

    def wait_for(self, key_id: str, key_name: str) -> float | None:
        """None if the key may go on now (one token spent), else the seconds until it may."""
        limit = self._access.limit_for(key_name)
        if limit is None:
            return None
        now = self._clock()
        lease = self._leases.get(key_id)
        if lease is not None and lease.tokens > 0 and now < lease.expires:
            lease.tokens -= 1
            return None
        want = max(1, min(limit.capacity, int(limit.per_second * _LEASE_FRACTION)))
        granted, wait = self._buckets.take(key_id, want, limit)
        if granted == 0:
            return max(wait, 0.001)
        self._leases[key_id] = _Lease(granted - 1, now + LEASE_SECONDS)
        return None
