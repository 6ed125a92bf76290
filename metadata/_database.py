"""Opening the metadata database (SQLite by default, PostgreSQL in deployments) with one engine setup
shared by everything that keeps state there: the trainer's examples and runs, the tuner's trials."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine


def open_database(url: str, *, schema: str | None = None) -> Engine:
    """An engine on ``url``; ``schema``: a PostgreSQL schema of its own (created if missing), e.g.
    one per test or demo."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    connect_args: dict[str, Any] = {}
    if schema is not None:
        setup = sa.create_engine(url)
        with setup.begin() as connection:
            connection.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        setup.dispose()
        connect_args["options"] = f"-csearch_path={schema}"
    engine = sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    # WAL lets `closedloop models` read while the trainer writes; NORMAL sync is safe under WAL.
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
