"""The SDK in an outage: its fallback ranks, an outage costs one timeout per decide, and feedback
that does not fit in memory is counted and handled as the caller chose.

A real server on loopback stands in for the service where a test needs it to fail on purpose (a
small Starlette app that answers 503 and counts what it was asked); otherwise the port is closed.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import pytest
from conftest import Server, free_port
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from closedloop.contracts import ClosedLoopConfig, FeedbackQueueFullError, ServiceUnavailableError
from closedloop.decision_service import create_app
from closedloop.sdk import AsyncClient, Client

FEED = {"x": {"price": 1, "topic": "a"}, "y": {"price": 9, "topic": "a"}, "z": {"price": 5, "topic": "b"}}


def _unavailable_service() -> tuple[Starlette, Counter[str]]:
    asked: Counter[str] = Counter()

    async def answer(request: Request) -> JSONResponse:
        asked[f"{request.method} {request.url.path}"] += 1
        return JSONResponse({"error": {"code": "service_unavailable", "message": "down"}}, status_code=503)

    routes = [Route(path, answer, methods=["GET", "POST"]) for path in ("/v1/decide", "/v1/use-cases")]
    return Starlette(routes=routes), asked


def test_with_the_service_down_from_the_start_a_fallback_still_ranks() -> None:
    with Client(f"http://127.0.0.1:{free_port()}", timeout=0.2) as client:
        decision = client.decide("feed", "u1", candidates=FEED)
    assert decision.fallback
    assert decision.ranking == ["x", "y", "z"]  # the product's own order: never None with candidates


def test_an_outage_costs_one_timeout_per_decide_not_a_use_case_fetch_too(
    serve: Callable[[object], Server],
) -> None:
    app, asked = _unavailable_service()
    server = serve(app)
    with Client(server.url, timeout=1.0, retries=1) as client:
        for _ in range(3):
            assert client.decide("feed", "u1", candidates=FEED).fallback
    assert asked == Counter({"POST /v1/decide": 6})  # two attempts each, no GET /v1/use-cases
    assert client.stats().fallbacks == 3


def test_use_cases_learned_on_the_first_answer_shape_the_fallback(
    config: ClosedLoopConfig, serve: Callable[[object], Server]
) -> None:
    server = serve(create_app(config))
    with Client(server.url, timeout=2.0) as client:
        assert not client.decide("feed", "u1", context={"country": "de"}, candidates=FEED).fallback
        server.stop()
        ranked = client.decide("feed", "u1", candidates=FEED)
        notify = client.decide("notify", "u1")
    assert (ranked.fallback, ranked.decision_type) == (True, "rank")
    assert ranked.ranking is not None
    assert (notify.decision_type, notify.choice) == ("binary", "yes")  # the declared default action


def test_async_client_learns_the_use_cases_too(
    config: ClosedLoopConfig, serve: Callable[[object], Server]
) -> None:
    server = serve(create_app(config))

    async def run() -> tuple[str, str | None]:
        async with AsyncClient(server.url, timeout=2.0) as client:
            await client.decide("notify", "u1", context={"days": 3})
            server.stop()
            fallback = await client.decide("notify", "u1")
            return fallback.decision_type, fallback.choice

    assert asyncio.run(run()) == ("binary", "yes")


def test_a_full_feedback_queue_drops_the_oldest_and_counts_them() -> None:
    with Client(
        f"http://127.0.0.1:{free_port()}", timeout=0.1, max_queued_feedback=10, flush_interval=3600
    ) as client:
        for i in range(25):
            client.log_feedback(f"d{i}", {"click": 1})
        stats = client.stats()
        assert (stats.feedback_queued, stats.feedback_dropped, stats.feedback_sent) == (10, 15, 0)
        assert [item["decision_id"] for item in client._queue] == [f"d{i}" for i in range(15, 25)]
        client.close()


def test_a_full_feedback_queue_raises_when_asked_to() -> None:
    client = Client(
        f"http://127.0.0.1:{free_port()}",
        timeout=0.1,
        max_queued_feedback=3,
        flush_interval=3600,
        on_full="raise",
    )
    for i in range(3):
        client.log_feedback(f"d{i}", {"click": 1})
    with pytest.raises(FeedbackQueueFullError) as caught:
        client.log_feedback("d3", {"click": 1})
    assert caught.value.field == "max_queued_feedback"
    assert client.stats().feedback_dropped == 0
    client._closed = True  # nothing can be sent: do not wait for the queue to drain
    client._http.close()


def test_a_blocking_client_waits_for_room_and_loses_nothing(
    config: ClosedLoopConfig, serve: Callable[[object], Server]
) -> None:
    server = serve(create_app(config))
    with Client(
        server.url, timeout=2.0, max_queued_feedback=5, batch_size=5, flush_interval=0.01, on_full="block"
    ) as client:
        decisions = [client.decide("pick", f"u{i}", candidates=["a", "b"]) for i in range(40)]
        for decision in decisions:
            client.log_feedback(decision.decision_id, {"click": 1})
        assert client.flush(timeout=10)
        stats = client.stats()
    assert (stats.feedback_sent, stats.feedback_dropped, stats.feedback_queued) == (40, 0, 0)


def test_unbatched_feedback_to_an_unreachable_service_raises_the_public_error() -> None:
    with (
        Client(f"http://127.0.0.1:{free_port()}", timeout=0.1, batch_feedback=False) as client,
        pytest.raises(ServiceUnavailableError, match="could not be reached"),
    ):
        client.log_feedback("d1", {"click": 1})
