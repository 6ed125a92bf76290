"""Short-lived facts the service checks feedback against: which decisions exist, what was reported.

Each fact expires when no feedback could still count for it (its use case's longest attribution
window plus a grace period). All operations take batches, so a feedback batch costs a few Redis round trips.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import msgspec

from closedloop.contracts import DecisionIndexKeys, ServiceUnavailableError


def decision_fact(use_case: str, decided_at: datetime, shown: Sequence[str] = ()) -> str:
    """What the index keeps for a decision: its use case, when it was made and, for choose and
    rank decisions, the candidates shown (the choice; a ranking's shown slots, top first), which
    feedback about a candidate is checked against."""
    fact = f"{decided_at.timestamp():.6f} {use_case}"
    return f"{fact} {msgspec.json.encode(list(shown)).decode()}" if shown else fact


@dataclass(frozen=True, slots=True)
class DecisionFact:
    use_case: str
    decided_at: float | None
    """None for a fact of an earlier version (the use case only)."""
    shown: tuple[str, ...] | None
    """None for a binary decision, or a fact of an earlier version."""


def read_decision_fact(value: str) -> DecisionFact:
    stamp, _, rest = value.partition(" ")
    try:
        decided_at = float(stamp)
    except ValueError:
        return DecisionFact(value, None, None)
    use_case, _, shown = rest.partition(" ")  # use case names hold no space
    return DecisionFact(use_case, decided_at, tuple(msgspec.json.decode(shown)) if shown else None)


Commit = tuple[Sequence[tuple[str, str]], Sequence[tuple[str, str]], float]
"""One decision's write to the index: its facts, its claims and their time to live (seconds)."""


@dataclass(frozen=True, slots=True)
class Seen:
    """What the index held under a key when it was looked up: the value, None, or the error that
    kept the index from answering."""

    value: str | ServiceUnavailableError | None


Report = tuple[str, Sequence[str]]
"""A report's feedback-seen key and its outcomes' reported keys."""


@dataclass(frozen=True)
class ReportClaim:
    fresh_id: bool
    """False: a report with this feedback id (for this decision) was claimed before: a replay."""
    fresh_outcomes: list[bool]
    """Per outcome of the report, in order: True if no earlier report claimed it."""


class DecisionIndex(Protocol):
    keys: DecisionIndexKeys

    def lookup(self, keys: Sequence[str]) -> list[str | None]: ...

    def claim_reports(self, reports: Sequence[Report], ttls: Sequence[float]) -> list[ReportClaim]:
        """Claim, atomically per report, its feedback id and then each of its outcomes: a report
        whose id is claimed already is a replay (nothing more is claimed for it); otherwise each
        outcome is fresh unless an earlier report claimed it (the first report counts). Each
        report's claims expire after its ``ttls`` entry (seconds)."""
        ...

    def commit(
        self, facts: Sequence[tuple[str, str]], claims: Sequence[tuple[str, str]], ttl: float
    ) -> list[bool]:
        """`remember` the facts and `claim` each ``(key, value)`` of ``claims``, in one round trip."""
        ...

    def commit_many(self, commits: Sequence[Commit]) -> list[list[bool]]:
        """Several `commit`s in one round trip (concurrent decisions' writes, `IndexBatcher`)."""
        ...

    def ping(self) -> bool: ...


if TYPE_CHECKING:
    import redis


class RedisDecisionIndex:
    """The index in Redis, shared by every replica (redis-py is imported by `from_url`)."""

    def __init__(self, client: redis.Redis, *, prefix: str) -> None:
        from redis.exceptions import RedisError

        self._redis_error = RedisError  # refused, reset, timed out: the index cannot answer
        self._redis = client
        self.keys = DecisionIndexKeys(prefix)
        self._claim_script: Any = None
        self._commit_script: Any = None

    @classmethod
    def from_url(cls, url: str, *, prefix: str) -> RedisDecisionIndex:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        return cls(client, prefix=prefix)

    def lookup(self, keys: Sequence[str]) -> list[str | None]:
        if not keys:
            return []
        try:
            values = self._redis.mget(list(keys))
        except self._redis_error as exc:
            raise _unavailable(exc) from exc
        return [v.decode() if isinstance(v, bytes) else v for v in values]

    def claim_reports(self, reports: Sequence[Report], ttls: Sequence[float]) -> list[ReportClaim]:
        if not reports:
            return []
        # One script call for the batch: atomic per report, so a retry racing its original is a
        # replay, never half a duplicate; and redis-py packs a pipeline's commands in Python,
        # which cost three quarters of the time of a 1000-item batch.
        if self._claim_script is None:
            self._claim_script = self._redis.register_script(_CLAIM_REPORTS_SCRIPT)
        keys = [key for seen, outcomes in reports for key in (seen, *outcomes)]
        args = [
            value
            for (_, outcomes), ttl in zip(reports, ttls, strict=True)
            for value in (len(outcomes), int(ttl * 1000))
        ]
        try:
            flags = iter(self._claim_script(keys=keys, args=args))
        except self._redis_error as exc:
            raise _unavailable(exc) from exc
        return [
            ReportClaim(bool(next(flags)), [bool(next(flags)) for _ in outcomes]) for _, outcomes in reports
        ]

    def commit(
        self, facts: Sequence[tuple[str, str]], claims: Sequence[tuple[str, str]], ttl: float
    ) -> list[bool]:
        return self.commit_many([(facts, claims, ttl)])[0]

    def commit_many(self, commits: Sequence[Commit]) -> list[list[bool]]:
        if not commits:
            return []
        if self._commit_script is None:
            self._commit_script = self._redis.register_script(_COMMIT_SCRIPT)
        keys: list[str] = []
        args: list[str | int] = []
        for facts, claims, ttl in commits:
            keys += [key for key, _ in facts] + [key for key, _ in claims]
            args += [int(ttl * 1000), len(facts), len(claims)]
            args += [value for _, value in facts] + [value for _, value in claims]
        try:
            flags = iter(self._commit_script(keys=keys, args=args))
        except self._redis_error as exc:
            raise _unavailable(exc) from exc
        return [[bool(next(flags)) for _ in claims] for _, claims, _ in commits]

    def ping(self) -> bool:
        try:
            return bool(self._redis.ping())
        except self._redis_error:
            return False


_CLAIM_REPORTS_SCRIPT = """
local flags = {}
local k = 1
for r = 1, #ARGV, 2 do
  local outcomes = tonumber(ARGV[r])
  local ttl = ARGV[r + 1]
  local fresh = redis.call('SET', KEYS[k], '1', 'NX', 'PX', ttl)
  flags[#flags + 1] = fresh and 1 or 0
  for o = 1, outcomes do
    local claimed = fresh and redis.call('SET', KEYS[k + o], '1', 'NX', 'PX', ttl)
    flags[#flags + 1] = claimed and 1 or 0
  end
  k = k + 1 + outcomes
end
return flags
"""


_COMMIT_SCRIPT = """
-- ARGV, per commit: ttl (ms), number of facts, number of claims, then their values in KEYS' order
local claimed = {}
local k, a = 1, 1
while a <= #ARGV do
  local ttl, facts, claims = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
  a = a + 3
  for _ = 1, facts do
    redis.call('SET', KEYS[k], ARGV[a], 'PX', ttl)
    k, a = k + 1, a + 1
  end
  for _ = 1, claims do
    if redis.call('SET', KEYS[k], ARGV[a], 'NX', 'PX', ttl) then
      claimed[#claimed + 1] = 1
    else
      claimed[#claimed + 1] = 0
    end
    k, a = k + 1, a + 1
  end
end
return claimed
"""


def _unavailable(exc: Exception) -> ServiceUnavailableError:
    return ServiceUnavailableError(
        # No address here: the message reaches callers; the cause (logged) has it.
        "The decision index in Redis cannot be reached.",
        hint="Check CLOSEDLOOP_REDIS_URL and that Redis is running; retry the request.",
    )


class MemoryDecisionIndex:
    """The embedded index: a dictionary with expiry times, swept as it grows."""

    def __init__(self, *, prefix: str = "closedloop", clock: Callable[[], float] = time.monotonic) -> None:
        self.keys = DecisionIndexKeys(prefix)
        self._clock = clock
        self._entries: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._next_sweep = 0.0

    def _remember(self, entries: Sequence[tuple[str, str]], ttl: float) -> None:
        now = self._clock()
        with self._lock:
            for key, value in entries:
                self._entries[key] = (value, now + ttl)
            self._sweep(now)

    def lookup(self, keys: Sequence[str]) -> list[str | None]:
        now = self._clock()
        with self._lock:
            return [self._live(key, now) for key in keys]

    def claim_reports(self, reports: Sequence[Report], ttls: Sequence[float]) -> list[ReportClaim]:
        now = self._clock()
        with self._lock:
            return [
                self._claim_report(seen, outcomes, now + ttl, now)
                for (seen, outcomes), ttl in zip(reports, ttls, strict=True)
            ]

    def _claim_report(self, seen: str, outcomes: Sequence[str], expires: float, now: float) -> ReportClaim:
        if self._live(seen, now) is not None:
            return ReportClaim(False, [False] * len(outcomes))
        self._entries[seen] = ("1", expires)
        fresh = []
        for key in outcomes:
            fresh.append(self._live(key, now) is None)
            if fresh[-1]:
                self._entries[key] = ("1", expires)
        return ReportClaim(True, fresh)

    def commit(
        self, facts: Sequence[tuple[str, str]], claims: Sequence[tuple[str, str]], ttl: float
    ) -> list[bool]:
        self._remember(facts, ttl)
        now = self._clock()
        with self._lock:
            fresh = [self._live(key, now) is None for key, _ in claims]
            for (key, value), new in zip(claims, fresh, strict=True):
                if new:
                    self._entries[key] = (value, now + ttl)
        return fresh

    def commit_many(self, commits: Sequence[Commit]) -> list[list[bool]]:
        return [self.commit(facts, claims, ttl) for facts, claims, ttl in commits]

    def ping(self) -> bool:
        return True

    def _live(self, key: str, now: float) -> str | None:
        entry = self._entries.get(key)
        return entry[0] if entry is not None and entry[1] > now else None

    def _sweep(self, now: float) -> None:
        if now < self._next_sweep:
            return
        self._entries = {k: e for k, e in self._entries.items() if e[1] > now}
        self._next_sweep = now + 60.0
