"""The decision index on real Redis: a claim succeeds once per key, expires, and can be released."""

from __future__ import annotations

import pytest
import redis
from conftest import REDIS_URL

from closedloop.decision_service import RedisDecisionIndex

pytestmark = pytest.mark.integration


def test_claims_are_granted_once_per_key_with_their_expiry(redis_prefix: str) -> None:
    index = RedisDecisionIndex.from_url(REDIS_URL, prefix=redis_prefix)
    keys = [f"{redis_prefix}:reported:d{i}:click" for i in range(1500)]
    assert index.claim(keys[:1000], ttl=60.0) == [True] * 1000
    assert index.claim(keys, ttl=60.0) == [False] * 1000 + [True] * 500
    assert index.claim([], ttl=60.0) == []
    assert index.lookup(keys[:1]) == ["1"]
    ttl_ms = redis.Redis.from_url(REDIS_URL).pttl(keys[0])
    assert 0 < ttl_ms <= 60_000
    index.release(keys[:10])
    assert index.claim(keys[:12], ttl=60.0, value="x") == [True] * 10 + [False] * 2
    assert index.lookup(keys[:1]) == ["x"]
