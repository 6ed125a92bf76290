"""One tuner process per run: a lock that the operating system or the database drops when its
holder dies, so that a killed tuner can be restarted at once and a second one is refused.

Two processes on one run would each deploy rounds and attach trials to the same Ax experiment.
A lease row with a heartbeat would refuse a restart until it expired; instead the lock lives as
long as its holder: a PostgreSQL session advisory lock (released when the connection closes,
which the kernel does when the process dies) or, for SQLite, ``flock`` on a file beside the
database (released with the process's descriptors).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from closedloop.contracts import TuningError


@contextlib.contextmanager
def hold_run(engine: Engine, run: str) -> Iterator[None]:
    """Hold ``run`` for this process until the block ends; TuningError if another process does."""
    if engine.dialect.name == "postgresql":
        with _advisory_lock(engine, run):
            yield
    elif engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        with _file_lock(Path(str(engine.url.database)), run):
            yield
    else:  # an in-memory database lives in this process only
        yield


def _refused(run: str) -> TuningError:
    return TuningError(
        f"The tuning run {run} is being run by another process.",
        field="use_case",
        value=run,
        expected="one `closedloop tune start` per use case and mode",
        hint="Let it finish, or `closedloop tune stop` it; a killed tuner releases the run at once.",
    )


@contextlib.contextmanager
def _advisory_lock(engine: Engine, run: str) -> Iterator[None]:
    # Advisory locks are per database, not per schema: the key includes the schema searched.
    # Autocommit: the session lock needs no transaction, and one left open for hours would be
    # "idle in transaction" (which servers may be set to kill).
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        schema = connection.execute(sa.text("SELECT current_schema()")).scalar()
        digest = hashlib.blake2b(f"closedloop-tuning:{schema}:{run}".encode(), digest_size=8).digest()
        key = int.from_bytes(digest, "big", signed=True)
        if not connection.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar():
            raise _refused(run)
        try:
            yield
        finally:
            connection.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})


@contextlib.contextmanager
def _file_lock(database: Path, run: str) -> Iterator[None]:
    path = database.with_name(f"{database.name}.{run}.lock")
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _refused(run) from None
        yield
    finally:
        os.close(descriptor)  # releases the lock
