"""The decision service: the engine that decides and logs, and its HTTP app.

- `DecisionEngine`: features -> champion LightGBM models -> value function -> exploration -> logged
  decision, and feedback intake; the whole service minus HTTP (what `EmbeddedClient` runs)
- `open_engine(config)`: an engine on the stores the configuration names
- `create_app(config)`: the FastAPI service (``closedloop serve`` runs it under uvicorn, with
  `JsonErrorHttpProtocol`: uvicorn's HTTP parser, answering what it refuses in the error format);
  `SERVICE_ROUTES`, the API-key scope each route needs; `install_error_handlers` and
  `describe_bearer_auth`, the error format and key description other apps (the console) share;
  `serve_bundled_docs`, ``/docs`` from Swagger UI's assets in a wheel (no CDN)
- `DecisionIndex`: the short-lived facts feedback is checked against, in Redis
  (`RedisDecisionIndex`) or in memory (`MemoryDecisionIndex`); `open_decision_index` picks one

The decision logic itself (features, policy, arms) is `closedloop.policy`. FastAPI is imported
when `create_app` is first used and redis-py by `RedisDecisionIndex.from_url`, so the embedded
install (``closedloop[embedded]``) needs neither.
"""

import typing

from ._decision_index import DecisionIndex, MemoryDecisionIndex, RedisDecisionIndex
from ._engine import DecisionEngine, EngineStatus
from ._wiring import open_decision_index, open_engine

if typing.TYPE_CHECKING:
    from ._app import SERVICE_ROUTES, create_app, describe_bearer_auth, install_error_handlers
    from ._docs import serve_bundled_docs
    from ._http_protocol import JsonErrorHttpProtocol

_HTTP_NAMES = ("SERVICE_ROUTES", "create_app", "describe_bearer_auth", "install_error_handlers")


def __getattr__(name: str) -> typing.Any:
    if name in _HTTP_NAMES:  # the HTTP layer, imported only by those who serve HTTP
        from . import _app

        return getattr(_app, name)
    if name == "serve_bundled_docs":
        from ._docs import serve_bundled_docs

        return serve_bundled_docs
    if name == "JsonErrorHttpProtocol":
        from ._http_protocol import JsonErrorHttpProtocol

        return JsonErrorHttpProtocol
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


__all__ = [
    "DecisionEngine",
    "DecisionIndex",
    "EngineStatus",
    "JsonErrorHttpProtocol",
    "MemoryDecisionIndex",
    "RedisDecisionIndex",
    "SERVICE_ROUTES",
    "create_app",
    "describe_bearer_auth",
    "install_error_handlers",
    "open_decision_index",
    "open_engine",
    "serve_bundled_docs",
]
