"""The model registry in Redis: what the trainer publishes and every decision service replica reads."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from closedloop.contracts import ExperimentPhase, RegistryKeys, ServiceUnavailableError

from ._protocol import ModelVersion, version_name

if TYPE_CHECKING:
    import redis

# The generation moves on to at least the current time in microseconds, not only by one: a
# Redis that lost its data (no persistence) starts again far above any value a running service
# saw, so no service mistakes the new registry's first change for the state it already has.
_BUMP = """
local next = redis.call('INCR', KEYS[1])
local floor = tonumber(ARGV[1])
if next < floor then
  redis.call('SET', KEYS[1], ARGV[1])
  next = floor
end
return next
"""

# Compare-and-set of an experiment's phase list: replace it only if it still has ARGV[2] phases.
_REPLACE_PHASES = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
local count = 0
if current then count = #cjson.decode(current) end
if count ~= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
local next = redis.call('INCR', KEYS[2])
if next < tonumber(ARGV[4]) then redis.call('SET', KEYS[2], ARGV[4]) end
return 1
"""


class RedisModelRegistry:
    """The registry in Redis (redis-py is imported by `from_url`, so embedded installs need none)."""

    def __init__(self, client: redis.Redis, *, prefix: str = "closedloop") -> None:
        from redis.exceptions import ConnectionError

        self._connection_error = ConnectionError
        self._redis = client
        self.keys = RegistryKeys(prefix)
        self._replace_phases = client.register_script(_REPLACE_PHASES)
        self._bump = client.register_script(_BUMP)

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "closedloop") -> RedisModelRegistry:
        import redis

        return cls(redis.Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=5.0), prefix=prefix)

    def publish(
        self,
        use_case: str,
        outcome: str,
        model_text: str,
        metadata: Mapping[str, Any],
        *,
        champion: bool,
    ) -> ModelVersion:
        number = int(self._call(self._redis.incr, self.keys.sequence(use_case, outcome)))
        version = version_name(number, model_text)
        meta = {**metadata, "version": version, "published_at": time.time()}
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(
            self.keys.model(use_case, outcome, version),
            mapping={"text": model_text, "meta": json.dumps(meta)},
        )
        pipe.zadd(self.keys.versions(use_case, outcome), {version: number})
        if champion:
            self._queue_champion(pipe, use_case, outcome, version)
        self._call(pipe.execute)
        if champion:
            self._announce(use_case, outcome, version)
        return ModelVersion(use_case, outcome, version, meta)

    def set_champion(self, use_case: str, outcome: str, version: str) -> None:
        if not self._call(self._redis.exists, self.keys.model(use_case, outcome, version)):
            raise KeyError(f"no model {use_case}/{outcome}/{version} in the registry")
        pipe = self._redis.pipeline(transaction=True)
        self._queue_champion(pipe, use_case, outcome, version)
        self._call(pipe.execute)
        self._announce(use_case, outcome, version)

    def champion(self, use_case: str, outcome: str) -> str | None:
        value = self._call(self._redis.get, self.keys.champion(use_case, outcome))
        return value.decode() if isinstance(value, bytes) else value

    def pinned(self, use_case: str, outcome: str) -> str | None:
        value = self._call(self._redis.get, self.keys.pinned(use_case, outcome))
        return value.decode() if isinstance(value, bytes) else value

    def set_pinned(self, use_case: str, outcome: str, version: str | None) -> None:
        if version is None:
            self._call(self._redis.delete, self.keys.pinned(use_case, outcome))
        else:
            self._call(self._redis.set, self.keys.pinned(use_case, outcome), version)

    def champions(self, use_case: str, outcomes: list[str]) -> dict[str, str | None]:
        values = self._call(self._redis.mget, [self.keys.champion(use_case, o) for o in outcomes])
        return {o: (v.decode() if isinstance(v, bytes) else v) for o, v in zip(outcomes, values, strict=True)}

    def all_champions(self, wanted: Mapping[str, list[str]]) -> dict[str, dict[str, str | None]]:
        pairs = [(use_case, outcome) for use_case, outcomes in wanted.items() for outcome in outcomes]
        values = self._call(self._redis.mget, [self.keys.champion(*pair) for pair in pairs]) if pairs else []
        found: dict[str, dict[str, str | None]] = {use_case: {} for use_case in wanted}
        for (use_case, outcome), value in zip(pairs, values, strict=True):
            found[use_case][outcome] = value.decode() if isinstance(value, bytes) else value
        return found

    def model_text(self, use_case: str, outcome: str, version: str) -> str:
        text = self._call(self._redis.hget, self.keys.model(use_case, outcome, version), "text")
        if text is None:
            raise KeyError(f"no model {use_case}/{outcome}/{version} in the registry")
        return text.decode() if isinstance(text, bytes) else str(text)

    def versions(self, use_case: str, outcome: str) -> list[ModelVersion]:
        names = self._call(self._redis.zrange, self.keys.versions(use_case, outcome), 0, -1)
        pipe = self._redis.pipeline(transaction=False)
        decoded = [n.decode() if isinstance(n, bytes) else n for n in names]
        for version in decoded:
            pipe.hget(self.keys.model(use_case, outcome, version), "meta")
        metas = self._call(pipe.execute)
        return [
            ModelVersion(use_case, outcome, version, json.loads(meta) if meta else {})
            for version, meta in zip(decoded, metas, strict=True)
        ]

    def experiment_names(self) -> list[str]:
        names = self._call(self._redis.hkeys, self.keys.experiments)
        return sorted(n.decode() if isinstance(n, bytes) else n for n in names)

    def phases(self, experiment: str) -> list[ExperimentPhase]:
        raw = self._call(self._redis.hget, self.keys.experiments, experiment)
        return [ExperimentPhase.model_validate(item) for item in json.loads(raw)] if raw else []

    def replace_phases(self, experiment: str, phases: list[ExperimentPhase], *, expected: int) -> bool:
        payload = json.dumps([phase.model_dump(mode="json") for phase in phases])
        stored = self._call(
            self._replace_phases,
            [self.keys.experiments, self.keys.generation],
            [experiment, expected, payload, _now_micros()],
        )
        return bool(stored)

    def generation(self) -> int:
        return int(self._call(self._redis.get, self.keys.generation) or 0)

    def close(self) -> None:
        self._redis.close()

    def _queue_champion(self, pipe: Any, use_case: str, outcome: str, version: str) -> None:
        pipe.set(self.keys.champion(use_case, outcome), version)
        self._bump(keys=[self.keys.generation], args=[_now_micros()], client=pipe)

    def _announce(self, use_case: str, outcome: str, version: str) -> None:
        message = json.dumps({"use_case": use_case, "outcome": outcome, "version": version})
        self._call(self._redis.publish, self.keys.changes, message)

    def _call(self, method: Any, *args: Any) -> Any:
        try:
            return method(*args)
        except self._connection_error as exc:
            raise ServiceUnavailableError(
                "The model registry in Redis cannot be reached.",  # the cause (logged) has the address
                hint="Check CLOSEDLOOP_REDIS_URL and that Redis is running.",
            ) from exc


def _now_micros() -> int:
    return int(time.time() * 1_000_000)
