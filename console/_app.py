"""The console's HTTP app: what operators read and do, in a process of its own.

It serves the experiment reports (moved here from the decision service, so that computing one
never takes CPU from decisions) and the admin actions, each recorded in the audit trail with the
key that did it. It shares the stores with the service: the registry, the key store, the
metadata database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.responses import JSONResponse

from closedloop.access import AccessGuard, Gatekeeper, RouteScopes, principal_of
from closedloop.contracts import ClosedLoopConfig, ErrorBody, Scope, tuning_experiment_name
from closedloop.decision_service import describe_bearer_auth, install_error_handlers
from closedloop.evaluation import find_experiment, report_router
from closedloop.metadata import AuditLog
from closedloop.registry import ModelRegistry, open_registry, start_experiment, stop_experiment

_READ: frozenset[Scope] = frozenset({"read"})
_ADMIN: frozenset[Scope] = frozenset({"admin"})
CONSOLE_ROUTES = RouteScopes(
    exact={"/v1/experiments": _READ, "/v1/audit": _ADMIN},
    prefixes=[("/v1/experiments/", _READ), ("/v1/admin/", _ADMIN)],
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
    )
    install_error_handlers(app)
    app.include_router(report_router(config, models))
    _install_admin_routes(app, config, models, trail)
    app.add_middleware(AccessGuard, gatekeeper=gate, routes=CONSOLE_ROUTES)
    describe_bearer_auth(app, CONSOLE_ROUTES)

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    return app


def actor_of(request: Request) -> str:
    """Who made a request, for the audit trail: its key, or its address when no key is required."""
    key = principal_of(request.scope)
    if key is not None:
        return f"key:{key.key_id}"
    client = request.client
    return f"anonymous@{client.host if client else 'unknown'}"


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

    @app.get("/v1/audit", tags=["admin"], responses=_responses())
    def audit(limit: int = Query(100, ge=1, le=10_000), action: str | None = None) -> JSONResponse:
        """The audit trail, newest first: who did which admin action when."""
        return JSONResponse([asdict(entry) for entry in trail.entries(limit=limit, action=action)])
