"""The HTTP face of the decision engine: FastAPI app factory with a lifespan.

Every error leaves as JSON ``{"error": {code, type, message, field, value, expected, hint}}`` with
the status of its class, so the SDK can rebuild it; nothing the caller sends can produce a 500.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

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
    invalid_request_from,
)

from ._engine import DecisionEngine
from ._json_body import OrjsonBodyRoute, http_error
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
}


def create_app(
    config: ClosedLoopConfig,
    *,
    engine: DecisionEngine | None = None,
    refresh_interval: float = 0.5,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    routers: Sequence[APIRouter] = (),
) -> FastAPI:
    """The decision service for ``config``; pass ``engine`` to serve one built elsewhere (tests),
    and ``routers`` to mount more endpoints (``closedloop serve`` adds the experiment reports)."""
    owned = engine is None
    serving = engine or open_engine(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        serving.start_model_refresh(refresh_interval)
        # One worker of several: a scrape reaches only one of them, so each keeps its own gauges fresh.
        gauges = asyncio.create_task(_keep_gauges_fresh(serving)) if serving.metrics_per_worker else None
        try:
            yield
        finally:
            if gauges is not None:
                gauges.cancel()
            serving.stop_model_refresh()
            if owned:
                serving.close()

    app = FastAPI(
        title="closedloop decision service",
        version="1",
        lifespan=lifespan,
        description="Decisions from LightGBM models with exploration; every decision and outcome is logged.",
    )
    app.router.route_class = OrjsonBodyRoute
    _install_error_handlers(app, serving, max_body_bytes)
    _install_routes(app, serving, config)
    for router in routers:
        app.include_router(router)
    return app


def _errors(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI responses in the project's error format; 503 (a store unreachable) on every route."""
    described = {**descriptions, 503: "the decision index (Redis) cannot be reached: retry"}
    return {status: {"model": ErrorBody, "description": text} for status, text in described.items()}


def _install_routes(app: FastAPI, engine: DecisionEngine, config: ClosedLoopConfig) -> None:
    # The decision and feedback endpoints are ``async``: the engine's work is sub-millisecond CPU
    # plus one Redis round trip, cheaper done on the event loop than handed to the thread pool.
    @app.post(
        "/v1/decide",
        response_model=Decision,
        tags=["decisions"],
        responses=_errors(
            {
                404: "unknown use case",
                409: "request_id already used by another request",
                413: "too many candidates, or a body over the limit",
                422: "a field missing, mistyped or out of range (named in error.field)",
            }
        ),
    )
    async def decide(request: DecideRequest) -> Response:
        """Choose or rank candidates (or answer yes/no) for one unit; the decision is logged."""
        return Response(engine.decide(request).model_dump_json(), media_type="application/json")

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
    async def feedback(item: FeedbackIn) -> Response:
        """Report outcomes of one decision."""
        result = engine.log_feedback([item])[0]
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
    async def feedback_batch(batch: FeedbackBatch) -> Response:
        """Report outcomes of many decisions; each item gets its own result."""
        results = FeedbackBatchResult.model_construct(results=engine.log_feedback(batch.items))
        return Response(results.model_dump_json(), media_type="application/json")

    @app.post(
        "/v1/activate",
        response_model=ActivationResult,
        status_code=202,
        tags=["decisions"],
        responses=_errors({404: "unknown decision", 422: "a field missing or mistyped"}),
    )
    async def activate(request: ActivateRequest) -> Response:
        """Make a decision made with ``activate: false`` count: the product has shown it."""
        result = engine.activate(request.decision_id)
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
    async def abandon(batch: AbandonBatch) -> Response:
        """Decide requests whose answers were never used (the SDK timed out and fell back): the
        decisions they made, if any, never count. The SDK sends these itself."""
        result = AbandonResult(abandoned=engine.abandon(batch.items))
        return Response(result.model_dump_json(), status_code=202, media_type="application/json")

    @app.get("/v1/use-cases", tags=["configuration"])
    def use_cases() -> dict[str, Any]:
        """The declared use cases, with the feature order their models use."""
        return {
            name: {**uc.model_dump(mode="json"), "feature_names": engine.feature_names(name)}
            for name, uc in config.use_cases.items()
        }

    @app.get("/v1/models", tags=["models"])
    def models() -> dict[str, Any]:
        """Per use case and outcome: the version serving here, the champion and every version."""
        return engine.model_listing()

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

    @app.get("/metrics", tags=["operations"])
    def metrics() -> Response:
        """Prometheus metrics."""
        return Response(engine.render_metrics(), media_type="text/plain; version=0.0.4")


async def _keep_gauges_fresh(engine: DecisionEngine, interval: float = 1.0) -> None:
    while True:
        engine.update_gauges()
        await asyncio.sleep(interval)


def _install_error_handlers(app: FastAPI, engine: DecisionEngine, max_body_bytes: int) -> None:
    def reply(error: ClosedLoopError) -> JSONResponse:
        if 400 <= error.http_status < 500:
            engine.count_rejected(error.code)
        return JSONResponse(error.to_payload(), status_code=error.http_status)

    @app.exception_handler(ClosedLoopError)
    async def on_closedloop_error(request: Request, exc: ClosedLoopError) -> JSONResponse:
        if exc.http_status >= 500:
            logger.error("%s %s failed: %s", request.method, request.url.path, exc)
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
