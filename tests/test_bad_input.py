"""Whatever a client sends, the service answers below 500, and every refusal is in the project's
error format: ``{"error": {code, type, message, field, value, expected, hint}}`` — never FastAPI's
bare ``detail``. Generated bodies (hypothesis) go to every route of a real server: well-shaped
requests with hostile values (lone UTF-16 surrogates, integers of hundreds of digits, NaN, deep
nesting), arbitrary JSON, and bytes that are not JSON or not UTF-8.
"""

from __future__ import annotations

import json
import pathlib
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from conftest import Server, make_config, serve_in_subprocess
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from closedloop.decision_service import create_app

ROUTES = ["/v1/decide", "/v1/feedback", "/v1/feedback/batch"]

nasty_text = st.text(
    alphabet=st.characters(codec=None, include_characters="\ud800\udfff\x00\u2028", exclude_categories=()),
    max_size=12,
) | st.sampled_from(
    ["us", "de", "a", "b", "feed", "pick", "notify", "click", "revenue", "open", "", "\ud800"]
)
nasty_number = (
    st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from([0, 1, -1, 10**400, 1e308, 2**63])
)
leaf = nasty_text | nasty_number | st.booleans() | st.none()
json_value = st.recursive(
    leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(nasty_text, inner, max_size=4),
    max_leaves=12,
)
features = st.dictionaries(
    st.sampled_from(["country", "hour", "price", "topic", "days"]) | nasty_text, leaf, max_size=4
)
decide_body = st.fixed_dictionaries(
    {
        "use_case": st.sampled_from(["feed", "pick", "notify"]) | nasty_text,
        "unit_id": nasty_text | nasty_number,
    },
    optional={
        "context": features | json_value,
        "candidates": st.lists(
            st.fixed_dictionaries({"id": nasty_text}, optional={"features": features}), max_size=4
        ),
        "request_id": nasty_text | st.none(),
    },
)
feedback_item = st.fixed_dictionaries(
    {"decision_id": nasty_text, "outcomes": st.dictionaries(nasty_text, leaf, max_size=3)},
    optional={
        "timestamp": st.sampled_from(["1999-01-01T00:00:00Z", "2026-01-01T00:00:00", "not a time", "\ud800"])
        | nasty_number,
        "feedback_id": nasty_text | st.none(),
    },
)
bodies = {
    "/v1/decide": decide_body | json_value,
    "/v1/feedback": feedback_item | json_value,
    "/v1/feedback/batch": st.fixed_dictionaries({"items": st.lists(feedback_item, max_size=4)}) | json_value,
}


def _encoded(value: Any) -> bytes:
    # ensure_ascii writes a lone surrogate as the escape \ud800, which is valid JSON text
    return json.dumps(value, ensure_ascii=True, allow_nan=True).encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = Server(create_app(make_config(tmp_path_factory.mktemp("bad-input"))))
    running.start()
    yield running
    running.stop()


def _assert_answered(response: httpx.Response) -> None:
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        error = response.json()["error"]
        assert {"code", "type", "message", "field", "value", "expected", "hint"} <= set(error), error
        assert "detail" not in response.json()


@pytest.mark.parametrize("route", ROUTES)
def test_generated_bodies_never_get_a_5xx(route: str, server: Server) -> None:
    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(body=bodies[route])
    def post(body: Any) -> None:
        _assert_answered(
            httpx.post(
                server.url + route, content=_encoded(body), headers={"content-type": "application/json"}
            )
        )

    post()


@pytest.mark.parametrize("route", ROUTES)
def test_bytes_that_are_not_json_or_not_utf8_get_a_4xx_naming_the_body(route: str, server: Server) -> None:
    @settings(max_examples=60, deadline=None)
    @given(
        raw=st.binary(max_size=64) | st.sampled_from([b"\xff\xfe{}", b'{"use_case": "\xe9"}', b"[" * 5000])
    )
    def post(raw: bytes) -> None:
        response = httpx.post(server.url + route, content=raw, headers={"content-type": "application/json"})
        _assert_answered(response)
        assert response.status_code in (404, 409, 413, 422), response.text

    post()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"use_case": "pick", "unit_id": "\\ud800", "candidates": [{"id": "a"}]}', "unit_id"),
        ('{"use_case": "pick", "unit_id": "u", "candidates": [{"id": "\\ud800"}]}', "candidates.0.id"),
        (
            '{"use_case": "feed", "unit_id": "u", "context": {"country": "\\udfff"}, "candidates": []}',
            "context.country",
        ),
        (
            '{"use_case": "pick", "unit_id": "u", "candidates": [{"id": "a", "features": {"price": 1'
            + "0" * 400
            + "}}]}",
            "candidates[0].features.price",
        ),
    ],
)
def test_the_known_500s_name_their_field(body: str, field: str, server: Server) -> None:
    response = httpx.post(
        server.url + "/v1/decide", content=body.encode(), headers={"content-type": "application/json"}
    )
    _assert_answered(response)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == field


def test_unknown_routes_and_methods_answer_in_the_error_format(server: Server) -> None:
    for response in (httpx.get(server.url + "/v2/nothing"), httpx.get(server.url + "/v1/decide")):
        _assert_answered(response)
        assert response.status_code in (404, 405)


def test_the_openapi_schema_documents_every_status_with_the_real_error_body(server: Server) -> None:
    schema = httpx.get(server.url + "/openapi.json").json()
    expected = {
        "/v1/decide": {"200", "401", "403", "404", "409", "413", "422", "429", "503"},
        "/v1/feedback": {"202", "401", "403", "404", "409", "413", "422", "429", "503"},
        "/v1/feedback/batch": {"200", "401", "403", "413", "422", "429", "503"},
    }
    for path, statuses in expected.items():
        responses = schema["paths"][path]["post"]["responses"]
        assert set(responses) == statuses, (path, set(responses))
        for status in statuses - {"200", "202"}:
            reference = responses[status]["content"]["application/json"]["schema"]["$ref"]
            assert reference.rsplit("/", 1)[1] in {"ErrorBody", "FeedbackErrorBody"}, (
                path,
                status,
                reference,
            )
    assert "HTTPValidationError" not in json.dumps(schema)


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: abc\r\n\r\n{}",  # not a number
        b"Content-Length: 2\r\nContent-Length: 5\r\n\r\n{}",  # two that disagree
        b"Content\x01Length: 2\r\n\r\n{}",  # not a header name
    ],
)
def test_a_request_the_http_parser_refuses_gets_the_error_format(
    tmp_path: pathlib.Path, framing: bytes
) -> None:
    """`closedloop serve` answers what uvicorn's parser refuses in JSON, not uvicorn's plain text."""
    path = tmp_path / "closedloop.yaml"
    path.write_text(yaml.safe_dump(make_config(tmp_path).model_dump(mode="json"), sort_keys=False))
    with serve_in_subprocess(path) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /v1/decide HTTP/1.1\r\nHost: x\r\n" + framing)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400"), answer
    assert b"content-type: application/json" in head.lower()
    error = json.loads(body)["error"]
    assert (error["code"], error["field"]) == ("invalid_request", "http")
    assert "Content-Length" in error["expected"]
