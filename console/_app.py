"""The console's HTTP app: what operators read and do, in a process of its own: pages for people
(`_pages`, a browser signs in with an API key kept in an HttpOnly cookie) and the same numbers as
JSON for scripts.

It serves the experiment reports (moved here from the decision service, so that computing one
never takes CPU from decisions) and the admin actions, each recorded in the audit trail with the
key that did it. It shares the stores with the service: the registry, the key store, the
metadata database.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from closedloop.access import OPEN_PATHS, AccessGuard, Gatekeeper, RouteScopes, principal_of
from closedloop.contracts import (
    ClosedLoopConfig,
    ErrorBody,
    InvalidRequestError,
    Scope,
    tuning_experiment_name,
)
from closedloop.decision_service import describe_bearer_auth, install_error_handlers, serve_bundled_docs
from closedloop.evaluation import find_experiment, report_router
from closedloop.metadata import AuditLog
from closedloop.registry import (
    ChampionChange,
    ModelRegistry,
    open_registry,
    pin_champion,
    roll_back_champion,
    start_experiment,
    stop_experiment,
    unpin_champion,
)

from ._data import model_listing, training_overview, tuning_runs
from ._pages import COOKIE, page_router

_READ: frozenset[Scope] = frozenset({"read"})
_ADMIN: frozenset[Scope] = frozenset({"admin"})
CONSOLE_ROUTES = RouteScopes(
    exact={
        "/": _READ,
        "/training": _READ,
        "/traffic": _READ,
        "/tuning": _READ,
        "/v1/experiments": _READ,
        "/v1/models": _READ,
        "/v1/training": _READ,
        "/v1/tuning": _READ,
        "/v1/audit": _ADMIN,
    },
    prefixes=[
        ("/use-cases/", _READ),
        ("/tuning/", _READ),
        ("/v1/experiments/", _READ),
        ("/v1/admin/", _ADMIN),
    ],
    open_paths=OPEN_PATHS | {"/login", "/static/console.css", "/favicon.ico"},
)
"""The scopes each console route needs (tests/test_access.py checks every route is here)."""


def create_console(
    config: ClosedLoopConfig,
    *,
    registry: ModelRegistry | None = None,
    gatekeeper: Gatekeeper | None = None,
    audit: AuditLog | None = None,
    database_schema: str | None = None,
) -> FastAPI:
    """The console for ``config``; stores built elsewhere may be passed (tests)."""
    models = registry or open_registry(config.infrastructure)
    gate = gatekeeper or Gatekeeper.open(config.infrastructure, config.access)
    trail = audit or AuditLog.from_url(config.infrastructure.resolved_database_url, schema=database_schema)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        gate.start()
        try:
            yield
        finally:
            gate.stop()
            if gatekeeper is None:
                gate.close()
            if audit is None:
                trail.close()
            if registry is None:
                models.close()

    app = FastAPI(
        title="closedloop console",
        version="1",
        lifespan=lifespan,
        description="Experiment reports and admin actions of a closedloop deployment.",
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    serve_bundled_docs(app)
    app.include_router(report_router(config, models))
    app.include_router(page_router(config, models, gate, database_schema=database_schema))
    _install_admin_routes(app, config, models, trail)
    _install_json_routes(app, config, models, database_schema)
    app.add_middleware(
        AccessGuard, gatekeeper=gate, routes=CONSOLE_ROUTES, cookie=COOKIE, login_path="/login"
    )
    describe_bearer_auth(app, CONSOLE_ROUTES)

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    return app


def _install_json_routes(
    app: FastAPI, config: ClosedLoopConfig, registry: ModelRegistry, database_schema: str | None
) -> None:
    database = config.infrastructure.resolved_database_url

    @app.get("/v1/models", tags=["models"], responses=_responses())
    def models(use_case: str | None = None) -> JSONResponse:
        """Per use case and outcome: champion, pinned version, every version with its lineage."""
        return JSONResponse(model_listing(config, registry, use_case))

    @app.get("/v1/training", tags=["training"], responses=_responses())
    def training() -> JSONResponse:
        """Training runs, the trainer's counters, how far behind it is, decisions per minute."""
        return JSONResponse(training_overview(database, schema=database_schema))

    @app.get("/v1/tuning", tags=["tuning"], responses=_responses())
    def tuning() -> JSONResponse:
        """Every tuning run with its status and recommendation."""
        return JSONResponse(tuning_runs(database, schema=database_schema))


def actor_of(request: Request) -> str:
    """Who made a request, for the audit trail: its key, or its address when no key is required."""
    key = principal_of(request.scope)
    if key is not None:
        return f"key:{key.key_id}"
    client = request.client
    return f"anonymous@{client.host if client else 'unknown'}"


async def _version_from(request: Request) -> str:
    body = await request.body()
    if request.headers.get("content-type", "").startswith("application/json"):
        version = json.loads(body or b"{}").get("version")
    else:
        version = parse_qs(body.decode("utf-8", "replace")).get("version", [None])[0]
    if not isinstance(version, str) or not version:
        raise InvalidRequestError(
            "Which version to pin?",
            field="version",
            value=version,
            expected="a version name, e.g. v3-1a2b3c4d",
        )
    return version


def _responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody} for status in (401, 403, 429, *statuses)}


def _install_admin_routes(
    app: FastAPI, config: ClosedLoopConfig, registry: ModelRegistry, trail: AuditLog
) -> None:
    @app.post("/v1/admin/experiments/{name}/start", tags=["admin"], responses=_responses(404, 409))
    def start(name: str, request: Request) -> JSONResponse:
        """Start an experiment as declared (a changed allocation starts a new phase)."""
        use_case_name, use_case, experiment = find_experiment(config, name)
        others = [*(e for e in use_case.experiments if e != name), tuning_experiment_name(use_case_name)]
        phase = start_experiment(registry, use_case_name, name, experiment, others=others)
        trail.record(actor_of(request), "experiment.start", name, phase=phase.phase, use_case=use_case_name)
        return JSONResponse(phase.model_dump(mode="json"))

    @app.post("/v1/admin/experiments/{name}/stop", tags=["admin"], responses=_responses(404, 409))
    def stop(name: str, request: Request) -> JSONResponse:
        """Stop an experiment: every unit goes back to the use case's own policy."""
        phase = stop_experiment(registry, name)
        trail.record(actor_of(request), "experiment.stop", name, phase=phase.phase)
        return JSONResponse(phase.model_dump(mode="json"))

    async def champion_change(request: Request, action: str, change: ChampionChange) -> Response:
        target = f"{change.use_case}/{change.outcome}"
        details = {"previous": change.previous, "champion": change.champion, "pinned": change.pinned}
        trail.record(actor_of(request), action, target, **details)
        if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return RedirectResponse(f"/use-cases/{change.use_case}", status_code=303)  # a page's form
        return JSONResponse({"use_case": change.use_case, "outcome": change.outcome, **details})

    @app.post("/v1/admin/models/{use_case}/{outcome}/rollback", tags=["admin"], responses=_responses(422))
    async def rollback(use_case: str, outcome: str, request: Request) -> Response:
        """Serve the champion's predecessor again, pinned."""
        return await champion_change(
            request, "champion.rollback", roll_back_champion(registry, use_case, outcome)
        )

    @app.post("/v1/admin/models/{use_case}/{outcome}/pin", tags=["admin"], responses=_responses(422))
    async def pin(use_case: str, outcome: str, request: Request) -> Response:
        """Serve a version and keep it (form field or JSON ``version``)."""
        version = await _version_from(request)
        return await champion_change(
            request, "champion.pin", pin_champion(registry, use_case, outcome, version)
        )

    @app.post("/v1/admin/models/{use_case}/{outcome}/unpin", tags=["admin"], responses=_responses())
    async def unpin(use_case: str, outcome: str, request: Request) -> Response:
        """Let the trainer promote challengers again."""
        return await champion_change(request, "champion.unpin", unpin_champion(registry, use_case, outcome))

    @app.get("/v1/audit", tags=["admin"], responses=_responses())
    def audit(limit: int = Query(100, ge=1, le=10_000), action: str | None = None) -> JSONResponse:
        """The audit trail, newest first: who did which admin action when."""
        return JSONResponse([asdict(entry) for entry in trail.entries(limit=limit, action=action)])
