"""Where API keys are kept: Redis (shared by every replica), or a file under ``data_dir`` when
embedded. Both keep revoked keys, marked: a store that ever held a key keeps requiring one, so
revoking the last key does not open the service to everybody."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from closedloop.contracts import AccessKeys, InfrastructureConfig, ServiceUnavailableError

from ._keys import ApiKey

if TYPE_CHECKING:
    import redis


class KeyStore(Protocol):
    def load(self) -> dict[str, ApiKey]:
        """Every key ever made (revoked ones too), by key id."""
        ...

    def save(self, key: ApiKey) -> None:
        """Add a key, or replace one with the same id (a revocation)."""
        ...

    def close(self) -> None: ...


class RedisKeyStore:
    """Keys in one Redis hash (redis-py is imported by `from_url`)."""

    def __init__(self, client: redis.Redis, *, prefix: str) -> None:
        from redis.exceptions import ConnectionError, TimeoutError

        self._down = (ConnectionError, TimeoutError)
        self._redis = client
        self.keys = AccessKeys(prefix)

    @classmethod
    def from_url(cls, url: str, *, prefix: str) -> RedisKeyStore:
        import redis

        client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        return cls(client, prefix=prefix)

    def load(self) -> dict[str, ApiKey]:
        try:
            raw = self._redis.hgetall(self.keys.api_keys)
        except self._down as exc:
            raise _unreachable() from exc
        keys = (ApiKey.from_record(json.loads(value)) for value in raw.values())
        return {key.key_id: key for key in keys}

    def save(self, key: ApiKey) -> None:
        try:
            self._redis.hset(self.keys.api_keys, key.key_id, json.dumps(key.to_record()))
        except self._down as exc:
            raise _unreachable() from exc

    def close(self) -> None:
        self._redis.close()


class FileKeyStore:
    """Keys in a JSON file, replaced whole on every change (under a lock: two CLI commands at
    once lose neither change)."""

    def __init__(self, path: Path) -> None:
        self._path = path

    def load(self) -> dict[str, ApiKey]:
        try:
            records = json.loads(self._path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        keys = (ApiKey.from_record(record) for record in records)
        return {key.key_id: key for key in keys}

    def save(self, key: ApiKey) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            keys = self.load()
            keys[key.key_id] = key
            temporary = self._path.with_suffix(".tmp")
            temporary.write_text(json.dumps([k.to_record() for k in keys.values()], indent=1))
            os.chmod(temporary, 0o600)  # hashes only, but nobody else's business
            temporary.replace(self._path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self._path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def close(self) -> None:
        pass


def open_key_store(infrastructure: InfrastructureConfig) -> KeyStore:
    """Redis when ``redis_url`` is set (every replica sees the same keys), else a file."""
    if infrastructure.redis_url:
        return RedisKeyStore.from_url(infrastructure.redis_url, prefix=infrastructure.key_prefix)
    return FileKeyStore(infrastructure.data_path / "access" / "keys.json")


def _unreachable() -> ServiceUnavailableError:
    # No address in the message: it can reach a caller. The log of the process that failed has it.
    return ServiceUnavailableError(
        "The key store (Redis) cannot be reached.",
        hint="Check that Redis is running and CLOSEDLOOP_REDIS_URL; retry the request.",
    )
