"""``POST /v1/decide`` as a bare ASGI app: the service's hot path without FastAPI's machinery.

For every request FastAPI builds a `Request`, solves the route's dependencies, opens an exit stack
and wraps the sending of the response: about a sixth of a decision's CPU in ``closedloop serve``
(py-spy on bench/http_service.py). This app reads the body, decodes and checks it in one msgspec
pass (`decode_decide_body`; what msgspec refuses is read by pydantic's `DecideRequest`, which
accepts it or names the field, as before) and sends the answer itself. It runs behind the same
middleware as every route (API keys, body limit), and a `ClosedLoopError` raised here is answered
by the app's error handlers. The FastAPI route of the same path stays declared for the OpenAPI
description; this app is routed first (`install_decide_route`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI
from starlette.requests import ClientDisconnect
from starlette.routing import Route

from closedloop.contracts import DecideInput, DecideRequest, decode_decide_body

from ._engine import DecisionEngine
from ._json_body import model_from_body
from ._use_case_access import require_use_case

_HEADERS = [(b"content-type", b"application/json")]


class DecideEndpoint:
    def __init__(self, engine: DecisionEngine) -> None:
        self._engine = engine

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        answer = await decide_answer(self._engine, scope, await _body(receive))
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [*_HEADERS, (b"content-length", str(len(answer)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": answer})


async def decide_answer(engine: DecisionEngine, scope: Mapping[str, Any], body: bytes) -> bytes:
    """The JSON answer to a decide request's ``body``, for the key that ``scope`` was admitted with."""
    request = read_decide_request(body)
    require_use_case(scope, request.use_case, "use_case")
    decision = await engine.decide_async(request)
    return decision.model_dump_json().encode()


def read_decide_request(body: bytes) -> DecideInput:
    """The request in one msgspec pass, or by `DecideRequest` when msgspec refuses the body."""
    return decode_decide_body(body) or model_from_body(body, DecideRequest)


def install_decide_route(app: FastAPI, engine: DecisionEngine) -> None:
    """Route ``POST /v1/decide`` to `DecideEndpoint`, ahead of the routes declared on ``app``."""
    app.router.routes.insert(0, Route("/v1/decide", DecideEndpoint(engine), methods=["POST"]))


async def _body(receive: Any) -> bytes:
    """The request body, as Starlette's ``Request.body`` reads it."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
