"""The audit trail: who (an API key's id, or a local user for the CLI) did which admin action, when.

One table, ``cl_audit``, in the metadata database, appended to and never updated. Actions are
experiment start/stop, champion pin/rollback, tuning start/stop and key create/revoke; the
details say what changed (never a key's secret).
"""

from __future__ import annotations

import getpass
import json
import socket
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from ._database import open_database

_METADATA = sa.MetaData()
AUDIT_TABLE = sa.Table(
    "cl_audit",
    _METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.Float, nullable=False, index=True),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.String(200), nullable=False),
    sa.Column("details", sa.Text, nullable=False),
)


@dataclass(frozen=True)
class AuditEntry:
    at: float
    actor: str
    """``key:<key id>`` for a request with an API key, ``local:<user>@<host>`` for the CLI."""
    action: str
    """e.g. experiment.start, champion.pin, key.revoke"""
    target: str
    details: dict[str, Any]


class AuditLog:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        _METADATA.create_all(engine)

    @classmethod
    def from_url(cls, url: str, *, schema: str | None = None) -> AuditLog:
        return cls(open_database(url, schema=schema))

    def record(self, actor: str, action: str, target: str, **details: Any) -> AuditEntry:
        entry = AuditEntry(at=time.time(), actor=actor, action=action, target=target, details=details)
        with self._engine.begin() as connection:
            connection.execute(
                AUDIT_TABLE.insert().values(
                    at=entry.at,
                    actor=actor,
                    action=action,
                    target=target,
                    details=json.dumps(details, default=str, sort_keys=True),
                )
            )
        return entry

    def entries(self, *, limit: int = 100, action: str | None = None) -> list[AuditEntry]:
        """The latest entries, newest first (``action``: only those, or with that prefix + '.')."""
        query = sa.select(AUDIT_TABLE).order_by(AUDIT_TABLE.c.id.desc()).limit(limit)
        if action is not None:
            query = query.where(
                sa.or_(AUDIT_TABLE.c.action == action, AUDIT_TABLE.c.action.startswith(f"{action}."))
            )
        with self._engine.connect() as connection:
            rows = connection.execute(query).all()
        return [
            AuditEntry(
                at=r.at, actor=r.actor, action=r.action, target=r.target, details=json.loads(r.details)
            )
            for r in rows
        ]

    def close(self) -> None:
        self._engine.dispose()


def local_actor() -> str:
    """Who runs this process, for actions taken with the stores' own credentials (the CLI)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"local:{user}@{socket.gethostname()}"
