"""Reading request bodies: orjson first, the stdlib for what orjson refuses, and every failure an
error in the project's format that names the field.

orjson reads a decision's 600 feature values in a fifth of the stdlib's time. It refuses NaN and
Infinity, which the stdlib reads so that the feature check can name the field; integers beyond 64
bits, which the stdlib reads as Python ints (the feature and outcome checks refuse them, naming
the field); and lone UTF-16 surrogates (``"\\ud800"``), which the stdlib reads into strings that
nothing can encode again: those are refused here, naming where they are.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import orjson
from fastapi import Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from closedloop.contracts import (
    ClosedLoopError,
    InvalidRequestError,
    MethodNotAllowedError,
    RouteNotFoundError,
    invalid_request_from,
)

Model = TypeVar("Model", bound=BaseModel)


def model_from_body(body: bytes, model: type[Model]) -> Model:
    """``body`` read by `parse_body` and checked by ``model``; every failure names the field.
    For routes that read their body themselves rather than through FastAPI's dependency
    machinery, which cost a third of a decision's CPU (bench/http_service.py)."""
    try:
        payload = parse_body(body)
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(
            f"The request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}.",
            field="body",
            expected="a JSON object",
        ) from None
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise invalid_request_from(exc.errors()) from None


def request_body_of(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI's request body of a route that reads ``model`` itself (`model_from_body`); the schema
    is added to the components by `describe_bearer_auth`."""
    reference = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": reference}}}}


def parse_body(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        value = json.loads(body)
    except json.JSONDecodeError:
        raise  # FastAPI's own path: a 422 that quotes the parser
    except UnicodeDecodeError as exc:
        raise InvalidRequestError(
            f"The request body is not UTF-8: {exc.reason} at byte {exc.start}.",
            field="body",
            expected="a JSON object in UTF-8",
            hint="Send the body as UTF-8 (JSON has no other encoding on the wire).",
        ) from None
    except RecursionError:
        raise InvalidRequestError(
            "The request body nests too deeply to read.",
            field="body",
            expected="a JSON object nested a few levels deep",
        ) from None
    where = _lone_surrogate(value, "")
    if where is not None:
        raise InvalidRequestError(
            f"{where or 'body'} holds a lone UTF-16 surrogate, which is not a character.",
            field=where or "body",
            expected="valid Unicode text",
            hint="Escape pairs of surrogates together (\\ud83d\\ude00), or send the text as UTF-8.",
        )
    return value


def _lone_surrogate(value: Any, path: str) -> str | None:
    """The path of the first string (key or value) with a lone surrogate, or None."""
    if isinstance(value, str):
        return None if _encodable(value) else path
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        inner = f"{path}.{key}" if path else str(key)
        if isinstance(key, str) and not _encodable(key):
            return path or "body"
        found = _lone_surrogate(item, inner)
        if found is not None:
            return found
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def http_error(request: Request, status: int, detail: str) -> ClosedLoopError:
    """The project's error for what Starlette answers on its own (no route, wrong method, ...)."""
    where = f"{request.method} {request.url.path}"
    if status == 404:
        return RouteNotFoundError(
            f"{where}: no such route.",
            field="path",
            value=request.url.path,
            expected="one of the routes in /openapi.json",
        )
    if status == 405:
        return MethodNotAllowedError(
            f"{where}: the route does not take {request.method}.",
            field="method",
            value=request.method,
            expected="the method /openapi.json gives for this route",
        )
    return InvalidRequestError(f"{where}: {detail}.", field="body")


class _OrjsonBodyRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            self._json = parse_body(await self.body())
        return self._json


class OrjsonBodyRoute(APIRoute):
    """FastAPI's documented hook for a custom Request class (see "Custom Request and APIRoute")."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_orjson_body(request: Request) -> Response:
            return await handler(_OrjsonBodyRequest(request.scope, request.receive))

        return with_orjson_body
