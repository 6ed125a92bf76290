"""The decision service over real HTTP (uvicorn) with the SDK clients, on embedded stores."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx
import pytest
from conftest import Server, free_port

from closedloop.contracts import ClosedLoopConfig
from closedloop.decision_service import create_app
from closedloop.sdk import (
    AsyncClient,
    Client,
    DuplicateFeedbackError,
    InvalidRequestError,
    UnknownDecisionError,
    UnknownUseCaseError,
)

FEED = {"a": {"price": 1.0, "topic": "a"}, "b": {"price": 2.0, "topic": "b"}}


@pytest.fixture
def server(config: ClosedLoopConfig, serve: Callable[[object], Server]) -> Server:
    return serve(create_app(config, max_body_bytes=64 * 1024))


def post(server: Server, path: str, body: str | bytes) -> httpx.Response:
    return httpx.post(server.url + path, content=body, headers={"content-type": "application/json"})


def test_sdk_decides_and_reports_over_http(server: Server) -> None:
    with Client(server.url, timeout=2.0, batch_feedback=False) as client:
        decision = client.decide("feed", "user-1", context={"country": "fr"}, candidates=FEED)
        assert decision.ranking is not None
        assert sorted(decision.ranking) == ["a", "b"]
        assert not decision.fallback
        client.log_feedback(decision.decision_id, {"click": 1})
        with pytest.raises(DuplicateFeedbackError) as duplicate:
            client.log_feedback(decision.decision_id, {"click": 1})
        assert duplicate.value.field == "outcomes.click"
        with pytest.raises(UnknownDecisionError):
            client.log_feedback("no-such-decision", {"click": 1})
        with pytest.raises(UnknownUseCaseError, match="Unknown use case 'fed'"):
            client.decide("fed", "user-1", candidates=FEED)
        with pytest.raises(InvalidRequestError) as bad:
            client.decide("feed", "user-1", context={"hour": "noon"}, candidates=FEED)
        assert bad.value.field == "context.hour"


def test_batched_feedback_is_delivered_by_flush(server: Server) -> None:
    with Client(server.url, timeout=2.0, batch_size=50, flush_interval=10) as client:
        ids = [client.decide("pick", f"u{i}", candidates=["x", "y"]).decision_id for i in range(120)]
        for decision_id in ids:
            client.log_feedback(decision_id, {"click": 1})
        assert client.flush(timeout=10)
    metrics = httpx.get(server.url + "/metrics").text
    assert 'closedloop_feedback_total{status="accepted"} 120.0' in metrics


def test_async_client(server: Server) -> None:
    async def run() -> None:
        async with AsyncClient(server.url, timeout=2.0) as client:
            decision = await client.decide("notify", "u1", context={"days": 3})
            assert decision.choice in {"yes", "no"}
            await client.log_feedback(decision.decision_id, {"open": True})
            await client.flush()

    asyncio.run(run())


def test_an_unreachable_service_gives_a_flagged_default_decision(config: ClosedLoopConfig) -> None:
    with Client(f"http://127.0.0.1:{free_port()}", timeout=0.2, config=config) as client:
        decision = client.decide(
            "feed", "u1", candidates={"x": {"price": 1, "topic": "a"}, "y": {"price": 9, "topic": "a"}}
        )
        assert decision.fallback
        assert decision.policy == "default"
        assert decision.ranking == ["x", "y"]
        notify = client.decide("notify", "u1")
        assert notify.choice == "yes"  # the configured default action
        client.log_feedback(decision.decision_id, {"click": 1})  # dropped, not an orphan
        assert client.fallbacks == 2


@pytest.mark.parametrize(
    ("path", "body", "status", "field"),
    [
        ("/v1/decide", "{not json", 422, "body"),
        (
            "/v1/decide",
            json.dumps({"use_case": "nope", "unit_id": "u", "candidates": [{"id": "a"}]}),
            404,
            "use_case",
        ),
        ("/v1/decide", json.dumps({"use_case": "feed", "candidates": []}), 422, "unit_id"),
        (
            "/v1/decide",
            json.dumps(
                {
                    "use_case": "feed",
                    "unit_id": "u",
                    "context": {"hour": "x"},
                    "candidates": [{"id": "a", "features": {"price": 1, "topic": "a"}}],
                }
            ),
            422,
            "context.hour",
        ),
        (
            "/v1/decide",
            '{"use_case": "feed", "unit_id": "u", "context": {"hour": NaN}, '
            '"candidates": [{"id": "a", "features": {"price": 1, "topic": "a"}}]}',
            422,
            "context.hour",
        ),
        (
            "/v1/decide",
            '{"use_case": "feed", "unit_id": "u", "context": {"hour": Infinity}, '
            '"candidates": [{"id": "a", "features": {"price": 1, "topic": "a"}}]}',
            422,
            "context.hour",
        ),
        (
            "/v1/decide",
            json.dumps(
                {"use_case": "feed", "unit_id": "u", "candidates": [{"id": "a", "features": {"topic": "a"}}]}
            ),
            422,
            "candidates[0].features.price",
        ),
        (
            "/v1/decide",
            json.dumps(
                {
                    "use_case": "feed",
                    "unit_id": "u",
                    "candidates": [{"id": str(i), "features": {"price": 1, "topic": "a"}} for i in range(31)],
                }
            ),
            413,
            "candidates",
        ),
        (
            "/v1/decide",
            json.dumps(
                {
                    "use_case": "feed",
                    "unit_id": "u",
                    "candidates": [
                        {"id": str(i), "features": {"price": 1, "topic": "a"}} for i in range(3000)
                    ],
                }
            ),
            413,
            "body",
        ),
        ("/v1/decide", json.dumps({"use_case": "feed", "unit_id": "u", "extra": 1}), 422, "extra"),
        ("/v1/feedback", json.dumps({"decision_id": "d", "outcomes": {}}), 422, "outcomes"),
        (
            "/v1/feedback",
            json.dumps({"decision_id": "d", "outcomes": {"click": "yes"}}),
            422,
            "outcomes.click",
        ),
        ("/v1/feedback", json.dumps({"decision_id": "never", "outcomes": {"click": 1}}), 404, "decision_id"),
        ("/v1/feedback/batch", json.dumps({"items": []}), 422, "items"),
    ],
)
def test_bad_input_gets_a_4xx_that_names_the_field(
    server: Server, path: str, body: str, status: int, field: str
) -> None:
    response = post(server, path, body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["field"] == field
    assert error["message"]


def test_feedback_nan_and_a_binary_outcome_out_of_range_are_refused(server: Server) -> None:
    decision = post(server, "/v1/decide", json.dumps({"use_case": "notify", "unit_id": "u"})).json()
    for value in ("NaN", "2"):
        body = f'{{"decision_id": "{decision["decision_id"]}", "outcomes": {{"open": {value}}}}}'
        response = post(server, "/v1/feedback", body)
        assert response.status_code == 422
        assert response.json()["error"]["field"] == "outcomes.open"


def test_operational_endpoints(server: Server) -> None:
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(server.url + "/readyz")
    assert ready.status_code == 200
    assert (ready.json()["ready"], ready.json()["degraded"]) == (True, False)
    use_cases = httpx.get(server.url + "/v1/use-cases").json()
    assert use_cases["feed"]["feature_names"] == ["country", "hour", "price", "topic", "hour*price", "slot"]
    assert use_cases["notify"]["feature_names"] == ["days", "action", "days*action"]
    models = httpx.get(server.url + "/v1/models").json()
    assert models["use_cases"]["feed"]["click"] == {"serving": None, "champion": None, "versions": []}
    schema = httpx.get(server.url + "/openapi.json").json()
    assert {"/v1/decide", "/v1/feedback", "/v1/feedback/batch", "/v1/models"} <= set(schema["paths"])
    assert "closedloop_decide_seconds" in httpx.get(server.url + "/metrics").text
