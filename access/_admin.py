"""Making and revoking keys (what ``closedloop keys`` does)."""

from __future__ import annotations

import re
import time

from closedloop.contracts import KEY_NAME_PATTERN, SCOPES, InvalidRequestError, Scope

from ._keys import ApiKey, NewKey, new_key
from ._store import KeyStore


def create_key(
    store: KeyStore,
    name: str,
    scopes: list[str],
    *,
    use_cases: list[str] | None = None,
    known_use_cases: list[str] | None = None,
    created_by: str = "",
) -> NewKey:
    """A new key, saved as its hash; its token is in the result and nowhere else."""
    if not re.match(KEY_NAME_PATTERN, name):
        raise InvalidRequestError(
            f"{name!r} cannot name a key.", field="name", value=name, expected="1-64 of A-Z a-z 0-9 _ . -"
        )
    chosen = _scopes(scopes)
    if use_cases and known_use_cases is not None:
        for use_case in use_cases:
            if use_case not in known_use_cases:
                raise InvalidRequestError(
                    f"Unknown use case {use_case!r}.",
                    field="use_case",
                    value=use_case,
                    expected=f"one of {sorted(known_use_cases)}",
                )
    if any(key.name == name and key.active for key in store.load().values()):
        raise InvalidRequestError(
            f"An active key is already named {name!r}.",
            field="name",
            value=name,
            expected="a name no active key has",
            hint=f"Revoke it first (closedloop keys revoke {name}), or choose another name.",
        )
    made = new_key(name, chosen, use_cases=frozenset(use_cases) if use_cases else None, created_by=created_by)
    store.save(made.key)
    return made


def revoke_key(store: KeyStore, key: str) -> ApiKey:
    """Revoke the active key with this id or name."""
    matches = [k for k in store.load().values() if k.active and key in (k.key_id, k.name)]
    if not matches:
        raise InvalidRequestError(
            f"No active key has the id or name {key!r}.",
            field="key",
            value=key,
            expected="the id or name of an active key",
            hint="closedloop keys list shows them.",
        )
    revoked = matches[0].revoked(time.time())
    store.save(revoked)
    return revoked


def list_keys(store: KeyStore) -> list[ApiKey]:
    """Every key, oldest first (revoked ones marked)."""
    return sorted(store.load().values(), key=lambda k: k.created_at)


def _scopes(given: list[str]) -> frozenset[Scope]:
    chosen: set[Scope] = set()
    for scope in given:
        if scope not in SCOPES:
            raise InvalidRequestError(
                f"{scope!r} is not a scope.", field="scope", value=scope, expected=f"one of {list(SCOPES)}"
            )
        chosen.add(scope)
    if not chosen:
        raise InvalidRequestError(
            "A key needs at least one scope.", field="scope", value=None, expected=f"some of {list(SCOPES)}"
        )
    return frozenset(chosen)
