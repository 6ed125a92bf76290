"""`closedloop keys create|list|revoke`, `closedloop audit`, and the audit trail of CLI actions.

The CLI acts with the stores' own credentials, so it needs no API key; an admin action records
who did it: the key in ``CLOSEDLOOP_API_KEY`` (checked: it must be active and have the ``admin``
scope), else the local user and host.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from closedloop.contracts import ClosedLoopConfig, load_config

from ._output import JsonOption, print_json, print_table, when

if TYPE_CHECKING:
    from closedloop.metadata import AuditLog

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="The closedloop.yaml to use.", envvar="CLOSEDLOOP_CONFIG")
]

keys_app = typer.Typer(
    help="Make, list and revoke API keys (shown once, stored hashed).", no_args_is_help=True
)


def admin_actor(config: ClosedLoopConfig) -> str:
    """Who an admin action of this process is recorded as (see the module's docstring)."""
    from closedloop.access import Gatekeeper
    from closedloop.metadata import local_actor

    token = os.environ.get("CLOSEDLOOP_API_KEY")
    if not token:
        return local_actor()
    gate = Gatekeeper.open(config.infrastructure, config.access)
    try:
        key = gate.admit(f"Bearer {token}", frozenset({"admin"}))
    finally:
        gate.close()
    return f"key:{key.key_id}" if key is not None else local_actor()


@contextmanager
def audited(config: ClosedLoopConfig) -> Iterator[tuple[str, AuditLog]]:
    """The actor and the audit trail, for a command that records what it did."""
    from closedloop.metadata import AuditLog

    actor = admin_actor(config)
    trail = AuditLog.from_url(config.infrastructure.resolved_database_url)
    try:
        yield actor, trail
    finally:
        trail.close()


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Argument(help="What the key is for, e.g. checkout-service (unique).")],
    scope: Annotated[
        list[str], typer.Option("--scope", "-s", help="decide, read or admin (repeat for several).")
    ],
    use_case: Annotated[
        list[str] | None,
        typer.Option("--use-case", "-u", help="Limit a decide key to this use case (repeat for several)."),
    ] = None,
    config: ConfigOption = Path("closedloop.yaml"),
    as_json: JsonOption = False,
) -> None:
    """Make a key; its token is printed once and stored only as a hash."""
    from closedloop.access import create_key, open_key_store

    loaded = load_config(config)
    with audited(loaded) as (actor, trail):
        store = open_key_store(loaded.infrastructure)
        try:
            made = create_key(
                store,
                name,
                scope,
                use_cases=use_case,
                known_use_cases=list(loaded.use_cases),
                created_by=actor,
            )
        finally:
            store.close()
        trail.record(actor, "key.create", made.key.key_id, name=name, scopes=sorted(made.key.scopes))
    if as_json:
        print_json({**made.key.describe(), "token": made.token})
        return
    typer.echo(f"key {made.key.key_id} ({name}), scopes {', '.join(sorted(made.key.scopes))}")
    typer.echo(made.token)
    typer.echo("Store it now (a secret manager, CLOSEDLOOP_API_KEY): it is not shown again.", err=True)


@keys_app.command("list")
def keys_list(config: ConfigOption = Path("closedloop.yaml"), as_json: JsonOption = False) -> None:
    """Every key: id, name, scopes, use cases, when made, whether revoked (never a secret)."""
    from closedloop.access import list_keys, open_key_store

    loaded = load_config(config)
    store = open_key_store(loaded.infrastructure)
    try:
        keys = [key.describe() for key in list_keys(store)]
    finally:
        store.close()
    if as_json:
        print_json(keys)
        return
    print_table(
        ["key id", "name", "scopes", "use cases", "created", "revoked"],
        [
            [
                k["key_id"],
                k["name"],
                ",".join(k["scopes"]),
                ",".join(k["use_cases"] or ["all"]),
                when(k["created_at"]),
                when(k["revoked_at"]),
            ]
            for k in keys
        ],
    )


@keys_app.command("revoke")
def keys_revoke(
    key: Annotated[str, typer.Argument(help="The key's id or name.")],
    config: ConfigOption = Path("closedloop.yaml"),
) -> None:
    """Revoke a key: every service and console process refuses it within access.refresh_seconds."""
    from closedloop.access import open_key_store, revoke_key

    loaded = load_config(config)
    with audited(loaded) as (actor, trail):
        store = open_key_store(loaded.infrastructure)
        try:
            revoked = revoke_key(store, key)
        finally:
            store.close()
        trail.record(actor, "key.revoke", revoked.key_id, name=revoked.name)
    typer.echo(f"key {revoked.key_id} ({revoked.name}) revoked")


def audit(
    config: ConfigOption = Path("closedloop.yaml"),
    limit: Annotated[int, typer.Option(min=1, help="How many of the latest entries.")] = 50,
    action: Annotated[
        str | None, typer.Option(help="Only this action, or a family of them (experiment, key, tuning).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Who did which admin action when (experiments, tuning, keys), newest first."""
    from closedloop.metadata import AuditLog

    loaded = load_config(config)
    trail = AuditLog.from_url(loaded.infrastructure.resolved_database_url)
    try:
        entries = trail.entries(limit=limit, action=action)
    finally:
        trail.close()
    if as_json:
        print_json([asdict(e) for e in entries])
        return
    print_table(
        ["when", "who", "action", "target", "details"],
        [[when(e.at), e.actor, e.action, e.target, json.dumps(e.details, sort_keys=True)] for e in entries],
    )
