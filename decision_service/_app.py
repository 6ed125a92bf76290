"""The HTTP face of the decision engine: FastAPI app factory with a lifespan.

Every error leaves as JSON ``{"error": {code, type, message, field, value, expected, hint}}`` with
the status of its class, so the SDK can rebuild it; nothing the caller sends can produce a 500.
Every route but ``/healthz``, ``/readyz`` and the API's description needs an API key once any
key exists (`SERVICE_ROUTES` says which scope); experiment reports are not served here but by
the console (``closedloop console``), so that computing one never takes a decision's CPU.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from closedloop.access import OPEN_PATHS, AccessGuard, Gatekeeper, RouteScopes
from closedloop.contracts import (
    AbandonBatch,
    AbandonResult,
    ActivateRequest,
    ActivationResult,
    ClosedLoopConfig,
    ClosedLoopError,
    DecideRequest,
    Decision,
    ErrorBody,
    FeedbackBatch,
    FeedbackBatchResult,
    FeedbackErrorBody,
    FeedbackIn,
    FeedbackResult,
    PayloadTooLargeError,
    Scope,
    invalid_request_from,
    public_use_cases,
)

from ._decide_route import decide_answer, install_decide_route
from ._docs import serve_bundled_docs
from ._engine import DecisionEngine
from ._json_body import OrjsonBodyRoute, http_error, request_body_of
from ._use_case_access import allowed_use_cases, require_use_case
from ._wiring import open_engine

logger = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 1024 * 1024
_FEEDBACK_STATUS = {
    "accepted": 202,
    "replayed": 202,
    "unverified": 202,
    "orphan": 404,
    "duplicate": 409,
    "invalid": 422,
    "forbidden": 403,
}

_DECIDE: frozenset[Scope] = frozenset({"decide"})
_READ: frozenset[Scope] = frozenset({"read"})
SERVICE_ROUTES = RouteScopes(
    exact={
        "/v1/decide": _DECIDE,
        "/v1/feedback": _DECIDE,
        "/v1/feedback/batch": _DECIDE,
        "/v1/activate": _DECIDE,
        "/v1/abandon": _DECIDE,
        # What a caller needs to send valid requests and to fall back: the SDK reads it.
        "/v1/use-cases": _DECIDE | _READ,
        "/v1/models": _READ,
        "/metrics": _READ,
    },
    open_paths=OPEN_PATHS | {"/"},
)
"""The scopes each route of the service needs (tests/test_access.py checks every route is here)."""


def create_app(
    config: ClosedLoopConfig,
    *,
    engine: DecisionEngine | None = None,
    gatekeeper: Gatekeeper | None = None,
    refresh_interval: float = 0.5,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> FastAPI:
    """The decision service for ``config``; pass ``engine`` or ``gatekeeper`` to serve ones built
    elsewhere (tests)."""
    owned = engine is None
    serving = engine or open_engine(config)
    owned_gate = gatekeeper is None
    gate = gatekeeper or Gatekeeper.open(config.infrastructure, config.access)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        serving.start_model_refresh(refresh_interval)
        gate.start()
        # One worker of several: a scrape reaches only one of them, so each keeps its own gauges fresh.
        gauges = asyncio.create_task(_keep_gauges_fresh(serving)) if serving.metrics_per_worker else None
        try:
            yield
        finally:
            if gauges is not None:
                gauges.cancel()
            serving.stop_model_refresh()
            gate.stop()
            if owned:
                serving.close()
            if owned_gate:
                gate.close()

    app = FastAPI(
        title="closedloop decision service",
        version="1",
        lifespan=lifespan,
        docs_url=None,  # served from bundled assets below, not from a CDN
        redoc_url=None,
        description="Decisions from LightGBM models with exploration; every decision and outcome is logged.",
    )
    app.router.route_class = OrjsonBodyRoute
    install_error_handlers(app, count_rejected=serving.count_rejected, max_body_bytes=max_body_bytes)
    _install_routes(app, serving, config)
    install_decide_route(app, serving)
    serve_bundled_docs(app)
    app.add_middleware(AccessGuard, gatekeeper=gate, routes=SERVICE_ROUTES, on_refused=serving.count_rejected)
    describe_bearer_auth(app, SERVICE_ROUTES, read_models=[DecideRequest])
    return app


def describe_bearer_auth(
    app: FastAPI, routes: RouteScopes, *, read_models: Sequence[type[BaseModel]] = ()
) -> None:
    """Declare the bearer key in the OpenAPI description: every route that needs one says so, and
    which scopes, so a generated client sends it; and every error status with the body it really
    has (the project's ``ErrorBody``: FastAPI's own ``HTTPValidationError`` is never sent).
    ``read_models``: request bodies a route reads itself (`model_from_body`), for their schemas."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {}).setdefault("securitySchemes", {})["apiKey"] = {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key (closedloop keys create): 'Authorization: Bearer cl_<id>_<secret>'.",
        }
        for path, operations in schema.get("paths", {}).items():
            needed = routes.needed(path)
            if needed is None:
                continue
            for operation in operations.values():
                _real_error_bodies(operation)
                operation["security"] = [{"apiKey": sorted(needed)}]
                operation["description"] = (
                    operation.get("description", "")
                    + f"\n\nNeeds an API key with scope {' or '.join(sorted(needed))}."
                ).strip()
        schemas = schema.get("components", {}).get("schemas", {})
        for unused in ("HTTPValidationError", "ValidationError"):
            schemas.pop(unused, None)
        documented: list[type[BaseModel]] = [ErrorBody, *read_models]
        for model in documented:
            model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, definition in model_schema.pop("$defs", {}).items():
                schemas.setdefault(name, definition)
            schemas.setdefault(model.__name__, model_schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


_ERROR_REF = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}}
_ERROR_TEXT = {
    401: "no API key, or an unknown or revoked one",
    403: "the key lacks the route's scope",
    422: "a parameter missing, mistyped or out of range (named in error.field)",
    429: "the key is over its rate limit: retry after Retry-After seconds",
}


def _real_error_bodies(operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    for status, text in _ERROR_TEXT.items():
        key = str(status)
        if status == 422 and key not in responses:
            continue  # a route that takes no input
        current = responses.get(key, {})
        if "HTTPValidationError" in json.dumps(current) or key not in responses:
            responses[key] = {"description": current.get("description") or text, **_ERROR_REF}


def _errors(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses in the project's error format; on every route 401/403/429 (the key) and
    503 (a store unreachable)."""
    described = {
        401: "no API key, or an unknown or revoked one",
        403: "the key lacks the route's scope, or the use case",
        429: "the key is over its rate limit: retry after Retry-After seconds",
        **descriptions,
        503: "the decision index (Redis) cannot be reached: retry",
    }
    return {status: {"model": ErrorBody, "description": text} for status, text in described.items()}


def _install_routes(app: FastAPI, engine: DecisionEngine, config: ClosedLoopConfig) -> None:
    # The decision and feedback endpoints are ``async``: the engine's work is sub-millisecond CPU
    # plus one Redis round trip, cheaper done on the event loop than handed to the thread pool.
    @app.post(
        "/v1/decide",
        response_model=Decision,
        tags=["decisions"],
        openapi_extra=request_body_of(DecideRequest),
        responses=_errors(
            {
                404: "unknown use case",
                409: "request_id already used by another request",
                413: "too many candidates, or a body over the limit",
                422: "a field missing, mistyped or out of range (named in error.field)",
            }
        ),
    )
    async def decide(http: Request) -> Response:
        """Choose or rank candidates (or answer yes/no) for one unit; the decision is logged."""
        # Served by `DecideEndpoint` (routed first); declared here for the OpenAPI description.
        answer = await decide_answer(engine, http.scope, await http.body())
        return Response(answer, media_type="application/json")

    @app.post(
        "/v1/feedback",
        response_model=FeedbackResult,
        status_code=202,
        tags=["feedback"],
        responses={
            **_errors({413: "a body over the limit", 422: "a field missing, mistyped or out of range"}),
            404: {
                "model": FeedbackErrorBody,
                "description": "unknown decision: the report is kept as orphan",
            },
            409: {
                "model": FeedbackErrorBody,
                "description": "the outcome was reported before: the first counts",
            },
        },
    )
    async def feedback(item: FeedbackIn, http: Request) -> Response:
        """Report outcomes of one decision."""
        result = engine.log_feedback([item], use_cases=allowed_use_cases(http.scope))[0]
        if result.error is not None:
            return JSONResponse(
                {"error": result.error, "feedback_id": result.feedback_id, "status": result.status},
                status_code=_FEEDBACK_STATUS[result.status],
            )
        return JSONResponse(result.model_dump(), status_code=_FEEDBACK_STATUS[result.status])

    @app.post(
        "/v1/feedback/batch",
        response_model=FeedbackBatchResult,
        tags=["feedback"],
        responses=_errors(
            {413: "more items than allowed, or a body over the limit", 422: "a malformed batch"}
        ),
    )
    async def feedback_batch(batch: FeedbackBatch, http: Request) -> Response:
        """Report outcomes of many decisions; each item gets its own result."""
        found = engine.log_feedback(batch.items, use_cases=allowed_use_cases(http.scope))
        results = FeedbackBatchResult.model_construct(results=found)
        return Response(results.model_dump_json(), media_type="application/json")

    @app.post(
        "/v1/activate",
        response_model=ActivationResult,
        status_code=202,
        tags=["decisions"],
        responses=_errors({404: "unknown decision", 422: "a field missing or mistyped"}),
    )
    async def activate(request: ActivateRequest, http: Request) -> Response:
        """Make a decision made with ``activate: false`` count: the product has shown it."""
        result = engine.activate(request.decision_id, use_cases=allowed_use_cases(http.scope))
        return Response(result.model_dump_json(), status_code=202, media_type="application/json")

    @app.post(
        "/v1/abandon",
        response_model=AbandonResult,
        status_code=202,
        tags=["decisions"],
        responses=_errors(
            {404: "unknown use case", 413: "more items than allowed", 422: "a malformed batch"}
        ),
    )
    async def abandon(batch: AbandonBatch, http: Request) -> Response:
        """Decide requests whose answers were never used (the SDK timed out and fell back): the
        decisions they made, if any, never count. The SDK sends these itself."""
        for position, item in enumerate(batch.items):
            require_use_case(http.scope, item.use_case, f"items[{position}].use_case")
        result = AbandonResult(abandoned=engine.abandon(batch.items))
        return Response(result.model_dump_json(), status_code=202, media_type="application/json")

    @app.get("/v1/use-cases", tags=["configuration"], responses=_errors({}))
    def use_cases(http: Request) -> dict[str, Any]:
        """Each use case's shape: decision type, features, outcomes, value and default policy,
        and the feature order its models use. Nothing else of the configuration (no
        infrastructure, no value a ``${VAR}`` gave); a key limited to some use cases sees those."""
        allowed = allowed_use_cases(http.scope)
        names = [n for n in config.use_cases if allowed is None or n in allowed]
        shapes = public_use_cases(config, names)
        return {
            name: {**shape, "feature_names": engine.feature_names(name)} for name, shape in shapes.items()
        }

    @app.get("/v1/models", tags=["models"], responses=_errors({}))
    def models() -> dict[str, Any]:
        """Per use case and outcome: the version serving here, the champion and every version."""
        return engine.model_listing()

    @app.get("/", tags=["operations"])
    def index() -> dict[str, str]:
        """What this is and where to look: the API's description, health, the console."""
        return {
            "service": "closedloop decision service",
            "docs": "/docs",
            "openapi": "/openapi.json",
            "health": "/healthz",
            "ready": "/readyz",
            "reports": "served by the console: closedloop console (port 8001 by default)",
        }

    @app.get("/healthz", tags=["operations"])
    def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["operations"])
    def readyz() -> JSONResponse:
        """Ready to decide. ``degraded`` while the decision index (Redis) cannot be reached:
        decisions go on from the models in memory, feedback is refused (503) until it is back.
        Kafka being down changes neither: events wait in the outbox."""
        status = engine.status()
        checks = {"decision_index": status.decision_index, "event_log": status.event_log}
        return JSONResponse({"ready": True, "degraded": status.degraded, "checks": checks})

    @app.get("/metrics", tags=["operations"], responses=_errors({}))
    def metrics() -> Response:
        """Prometheus metrics."""
        return Response(engine.render_metrics(), media_type="text/plain; version=0.0.4")


async def _keep_gauges_fresh(engine: DecisionEngine, interval: float = 1.0) -> None:
    while True:
        engine.update_gauges()
        await asyncio.sleep(interval)


def install_error_handlers(
    app: FastAPI,
    *,
    count_rejected: Callable[[str], None] = lambda code: None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> None:
    """Answer every error in the project's format (``{"error": {...}}``, the class's status):
    closedloop's own, FastAPI's validation errors, unknown routes and methods, bodies over
    ``max_body_bytes``. The console's app uses the same."""

    def reply(error: ClosedLoopError) -> JSONResponse:
        if 400 <= error.http_status < 500:
            count_rejected(error.code)
        return JSONResponse(error.to_payload(), status_code=error.http_status)

    @app.exception_handler(ClosedLoopError)
    async def on_closedloop_error(request: Request, exc: ClosedLoopError) -> JSONResponse:
        if exc.http_status >= 500:
            # The cause names hosts and ports: the log keeps it, the answer does not.
            logger.error("%s %s failed: %s (cause: %s)", request.method, request.url.path, exc, exc.__cause__)
        return reply(exc)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        return reply(invalid_request_from(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI turns an error reading the body into a bare 400 {"detail": ...}: the body
        # reader's own error (bad UTF-8, too deep, a lone surrogate) is its cause.
        if isinstance(exc.__cause__, ClosedLoopError):
            return reply(exc.__cause__)
        return reply(http_error(request, exc.status_code, str(exc.detail)))

    app.add_middleware(BodySizeLimit, max_body_bytes=max_body_bytes, reply=reply)


class BodySizeLimit:
    """Refuses bodies over the limit with a 413 before they are parsed.

    Pure ASGI rather than ``@app.middleware("http")``: Starlette's BaseHTTPMiddleware runs every
    request through an extra task and stream, which cost more than the decision itself here. A
    body with a Content-Length passes straight through (the server holds it to that length); one
    without is read up to the limit and replayed.
    """

    def __init__(
        self, app: Any, *, max_body_bytes: int, reply: Callable[[ClosedLoopError], JSONResponse]
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.reply = reply

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            if length.isdigit() and int(length) > self.max_body_bytes:
                await self.reply(_too_large(int(length), self.max_body_bytes))(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_body_bytes:
                await self.reply(_too_large(size, self.max_body_bytes))(scope, receive, send)
                return
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if replayed:
                return dict(await receive())
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


def _too_large(size: int, limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"The request body is {size} bytes; the limit is {limit}.",
        field="body",
        value=size,
        expected=f"at most {limit} bytes",
        hint="Send feedback in smaller batches, or fewer candidates per decision.",
    )
