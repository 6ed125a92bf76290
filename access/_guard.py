"""The gatekeeper as ASGI middleware, for the decision service and the console alike.

Pure ASGI (no Starlette): it runs before routing on every request, so it must cost little and
answer refusals itself, in the project's error format, with ``WWW-Authenticate`` on a 401 and
``Retry-After`` on a 429.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from closedloop.contracts import ClosedLoopError, RateLimitedError, Scope

from ._gate import Gatekeeper
from ._keys import ApiKey

logger = logging.getLogger(__name__)

OPEN_PATHS = frozenset(
    {
        "/healthz",
        "/readyz",
        "/openapi.json",
        "/docs",
        "/docs/assets/swagger-ui-bundle.js",
        "/docs/assets/swagger-ui.css",
        "/docs/assets/favicon-32x32.png",
    }
)
"""Liveness, readiness and the API's description: no key needed, nothing in them is secret."""

_PRINCIPAL = "closedloop_principal"


@dataclass(frozen=True)
class RouteScopes:
    """The scopes each path needs (any one of them will do). A path neither listed nor under a
    listed prefix needs any valid key (a mistyped path then gets its 404 only with a key)."""

    exact: Mapping[str, frozenset[Scope]]
    prefixes: Sequence[tuple[str, frozenset[Scope]]] = ()
    open_paths: frozenset[str] = field(default=OPEN_PATHS)

    def needed(self, path: str) -> frozenset[Scope] | None:
        """The scopes ``path`` needs; None for an open path."""
        if path in self.open_paths:
            return None
        found = self.exact.get(path)
        if found is not None:
            return found
        for prefix, scopes in self.prefixes:
            if path.startswith(prefix):
                return scopes
        return frozenset()

    def declares(self, path: str) -> bool:
        """Whether ``path`` (a route's template) is classified: open, listed or under a prefix."""
        return (
            path in self.open_paths or path in self.exact or any(path.startswith(p) for p, _ in self.prefixes)
        )


def principal_of(scope: Mapping[str, Any]) -> ApiKey | None:
    """The key a request was admitted with (None when no keys are required)."""
    state = scope.get("state")
    return state.get(_PRINCIPAL) if isinstance(state, dict) else None


class AccessGuard:
    def __init__(
        self,
        app: Any,
        *,
        gatekeeper: Gatekeeper,
        routes: RouteScopes,
        on_refused: Callable[[str], None] = lambda code: None,
        cookie: str | None = None,
        login_path: str | None = None,
    ) -> None:
        """``cookie``: also take the key from this cookie (a browser's session on the console);
        ``login_path``: send a browser asking for a page without a valid key there."""
        self.app = app
        self.gatekeeper = gatekeeper
        self.routes = routes
        self.on_refused = on_refused
        self.cookie = cookie
        self.login_path = login_path

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        needed = self.routes.needed(scope["path"])
        if needed is None:
            await self.app(scope, receive, send)
            return
        try:
            key = self.gatekeeper.admit(_authorization(scope["headers"], self.cookie), needed)
        except ClosedLoopError as exc:
            self.on_refused(exc.code)
            if self._to_login(scope, exc):
                await _redirect(f"{self.login_path}?next={scope['path']}", send)
            else:
                await _refuse(exc, send)
            return
        if key is not None:
            scope.setdefault("state", {})[_PRINCIPAL] = key
        await self.app(scope, receive, send)

    def _to_login(self, scope: Any, error: ClosedLoopError) -> bool:
        """A page (not the API) asked for by a browser without a valid key."""
        return (
            self.login_path is not None
            and error.http_status == 401
            and scope["method"] == "GET"
            and not scope["path"].startswith("/v1/")
        )


def _authorization(headers: Collection[tuple[bytes, bytes]], cookie: str | None = None) -> str | None:
    found = None
    for name, value in headers:
        if name == b"authorization":
            return value.decode("latin-1")
        if cookie is not None and name == b"cookie":
            found = _cookie(value.decode("latin-1"), cookie)
    return f"Bearer {found}" if found else None


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


async def _redirect(location: str, send: Any) -> None:
    headers = [(b"location", location.encode("latin-1")), (b"content-length", b"0")]
    await send({"type": "http.response.start", "status": 303, "headers": headers})
    await send({"type": "http.response.body", "body": b""})


async def _refuse(error: ClosedLoopError, send: Any) -> None:
    body = json.dumps(error.to_payload()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if error.http_status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="closedloop"'))
    if isinstance(error, RateLimitedError):
        headers.append((b"retry-after", str(max(1, math.ceil(error.retry_after))).encode()))
    await send({"type": "http.response.start", "status": error.http_status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
