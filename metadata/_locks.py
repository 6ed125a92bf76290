"""Named locks in the metadata database that live exactly as long as their holder.

A lease row with a heartbeat would keep a killed holder's lock until the lease expired; these go
with the process instead: a PostgreSQL session advisory lock (released when the connection
closes, which the kernel does when the process dies) or, for SQLite, ``flock`` on a file beside
the database (released with the process's descriptors). The tuner holds one per tuning run; of
several trainers, the one holding ``trainer-leader`` closes windows and trains.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine


class ProcessLock:
    """A held lock; `try_take` gives one or None, `release` (or the holder's death) lets go."""

    def __init__(self, *, connection: Connection | None = None, key: int = 0, descriptor: int = -1) -> None:
        self._connection = connection
        self._key = key
        self._descriptor = descriptor

    @classmethod
    def try_take(cls, engine: Engine, name: str) -> ProcessLock | None:
        """The lock ``name`` for this process, or None while another process holds it."""
        if engine.dialect.name == "postgresql":
            return cls._advisory(engine, name)
        if engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
            return cls._file(Path(str(engine.url.database)), name)
        return cls()  # an in-memory database lives in this process only

    @classmethod
    def _advisory(cls, engine: Engine, name: str) -> ProcessLock | None:
        # Advisory locks are per database, not per schema: the key includes the schema searched.
        # Autocommit: the session lock needs no transaction, and one left open for hours would be
        # "idle in transaction" (which servers may be set to kill).
        connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        schema = connection.execute(sa.text("SELECT current_schema()")).scalar()
        digest = hashlib.blake2b(f"closedloop-{name}:{schema}".encode(), digest_size=8).digest()
        key = int.from_bytes(digest, "big", signed=True)
        if not connection.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar():
            connection.close()
            return None
        return cls(connection=connection, key=key)

    @classmethod
    def _file(cls, database: Path, name: str) -> ProcessLock | None:
        descriptor = os.open(
            database.with_name(f"{database.name}.{name}.lock"), os.O_RDWR | os.O_CREAT, 0o644
        )
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            return None
        return cls(descriptor=descriptor)

    def release(self) -> None:
        if self._connection is not None:
            self._connection.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": self._key})
            self._connection.close()
            self._connection = None
        if self._descriptor >= 0:
            os.close(self._descriptor)  # releases the flock
            self._descriptor = -1
