"""Access control on the real servers: API keys with scopes, revocation across processes, rate
limits, the audit trail of CLI actions, and nothing secret in what the service answers."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from conftest import (
    CONFIG_YAML,
    Database,
    PrivateRedis,
    Server,
    config_file,
    free_port,
    make_config,
    serve_in_subprocess,
    wait_for_port,
)
from typer.testing import CliRunner

from closedloop.access import Gatekeeper, RouteScopes, create_key, open_key_store, revoke_key
from closedloop.cli import app as cli
from closedloop.cli._serve import require_keys_off_loopback
from closedloop.console import CONSOLE_ROUTES, create_console
from closedloop.contracts import ClosedLoopConfig, ConfigError, RateLimitedError, parse_config
from closedloop.decision_service import SERVICE_ROUTES, create_app
from closedloop.metadata import AuditLog
from closedloop.sdk import AuthenticationError, Client, PermissionDeniedError

pytestmark = pytest.mark.integration

DECIDE_FEED = {
    "use_case": "feed",
    "unit_id": "u1",
    "candidates": [{"id": "a", "features": {"price": 1, "topic": "a"}}],
}
DECIDE_PICK = {"use_case": "pick", "unit_id": "u1", "candidates": [{"id": "a"}]}

# Every route of the service, with a request that gets past validation.
SERVICE_CALLS: list[tuple[str, str, dict[str, Any] | None]] = [
    ("POST", "/v1/decide", DECIDE_FEED),
    ("POST", "/v1/feedback", {"decision_id": "nope", "outcomes": {"click": 1}}),
    ("POST", "/v1/feedback/batch", {"items": [{"decision_id": "nope", "outcomes": {"click": 1}}]}),
    ("POST", "/v1/activate", {"decision_id": "nope"}),
    ("POST", "/v1/abandon", {"items": [{"use_case": "feed", "unit_id": "u", "request_id": "r"}]}),
    ("GET", "/v1/use-cases", None),
    ("GET", "/v1/models", None),
    ("GET", "/metrics", None),
]
OPEN_CALLS = [
    ("GET", "/"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
]


def _routes(app: Any) -> set[str]:
    return {route.path for route in app.routes if hasattr(route, "methods")}


def _assert_declared(app: Any, scopes: RouteScopes) -> None:
    undeclared = {path for path in _routes(app) if not scopes.declares(path)}
    # The Swagger UI assets: each open by its own name (any other name needs a key, then 404s).
    assert undeclared <= {"/docs/assets/{name}"}, f"routes with no declared scope: {undeclared}"
    assets = {"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"}
    assert {"/docs", *(f"/docs/assets/{name}" for name in assets)} <= scopes.open_paths


@pytest.fixture
def secured(tmp_path: Path, redis_prefix: str) -> Iterator[tuple[ClosedLoopConfig, Path, dict[str, str]]]:
    """The test configuration on Redis, with one key of each kind made."""
    config, path = config_file(tmp_path, redis_prefix)
    store = open_key_store(config.infrastructure)
    tokens = {
        name: create_key(store, name, scopes, use_cases=use_cases).token
        for name, scopes, use_cases in [
            ("decide-all", ["decide"], None),
            ("decide-pick", ["decide"], ["pick"]),
            ("reader", ["read"], None),
            ("admin", ["admin"], None),
            ("gone", ["decide", "read", "admin"], None),
        ]
    }
    revoke_key(store, "gone")
    store.close()
    return config, path, tokens


def _call(http: httpx.Client, method: str, path: str, body: Any, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return http.request(method, path, json=body, headers=headers)


def test_every_route_of_the_service_and_the_console_has_a_declared_scope(config: ClosedLoopConfig) -> None:
    _assert_declared(create_app(config), SERVICE_ROUTES)
    _assert_declared(create_console(config), CONSOLE_ROUTES)
    called = {path for _, path, _ in SERVICE_CALLS} | {path for _, path in OPEN_CALLS}
    assert _routes(create_app(config)) - {"/docs/assets/{name}"} <= called


def test_every_route_refuses_no_key_a_wrong_key_and_a_revoked_key_and_checks_scopes(
    secured: tuple[ClosedLoopConfig, Path, dict[str, str]], serve: Callable[[object], Server]
) -> None:
    config, _, tokens = secured
    server = serve(create_app(config))
    wrong = "cl_000000000000_" + "x" * 43
    forged = tokens["admin"][:-4] + "abcd"  # a real key id with another secret
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for method, path in OPEN_CALLS:
            assert http.request(method, path).status_code == 200, path
        for method, path, body in SERVICE_CALLS:
            for token in (None, "not-a-key", wrong, forged, tokens["gone"]):
                answer = _call(http, method, path, body, token)
                assert answer.status_code == 401, (path, token, answer.text)
                error = answer.json()["error"]
                assert error["code"] == "unauthenticated"
                assert "closedloop keys create" in error["hint"]
                assert answer.headers["www-authenticate"].startswith("Bearer")
                assert tokens["gone"] not in answer.text
                assert forged not in answer.text
            allowed = {
                name: _call(http, method, path, body, tokens[name]).status_code
                for name in ("decide-all", "reader", "admin")
            }
            needs_decide = path.startswith("/v1/") and method == "POST"
            both = path == "/v1/use-cases"
            for name, status in allowed.items():
                may = both or (name == "decide-all") == needs_decide
                assert status != 401, (path, name, status)
                assert (status != 403) == may, (path, name, status)
        revoked = _call(http, "GET", "/v1/models", None, tokens["gone"]).json()["error"]
        assert "revoked" in revoked["message"]


def test_a_key_limited_to_a_use_case_decides_and_reports_only_there(
    secured: tuple[ClosedLoopConfig, Path, dict[str, str]], serve: Callable[[object], Server]
) -> None:
    config, _, tokens = secured
    server = serve(create_app(config))
    with (
        Client(server.url, api_key=tokens["decide-pick"], timeout=5, batch_feedback=False) as pick_only,
        Client(server.url, api_key=tokens["decide-all"], timeout=5, batch_feedback=False) as everyone,
    ):
        assert pick_only.decide("pick", "u1", candidates=["a", "b"]).choice in {"a", "b"}
        with pytest.raises(PermissionDeniedError) as refused:
            pick_only.decide("feed", "u1", candidates={"a": {"price": 1, "topic": "a"}})
        assert refused.value.field == "use_case"
        assert "pick" in str(refused.value.expected)
        feed = everyone.decide("feed", "u1", candidates={"a": {"price": 1, "topic": "a"}})
        with pytest.raises(PermissionDeniedError):
            pick_only.log_feedback(feed.decision_id, {"click": 1})  # someone else's decision
        everyone.log_feedback(feed.decision_id, {"click": 1})
    listed = httpx.get(
        f"{server.url}/v1/use-cases", headers={"Authorization": f"Bearer {tokens['decide-pick']}"}
    )
    assert set(listed.json()) == {"pick"}


def test_the_sdk_without_a_key_raises_and_reads_the_environment(
    secured: tuple[ClosedLoopConfig, Path, dict[str, str]],
    serve: Callable[[object], Server],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config, _, tokens = secured
    server = serve(create_app(config))
    monkeypatch.delenv("CLOSEDLOOP_API_KEY", raising=False)
    with Client(server.url, timeout=5) as anonymous, pytest.raises(AuthenticationError):
        anonymous.decide("pick", "u1", candidates=["a"])
    monkeypatch.setenv("CLOSEDLOOP_API_KEY", tokens["decide-all"])
    with Client(server.url, timeout=5) as from_environment:
        assert not from_environment.decide("pick", "u1", candidates=["a"]).fallback


def test_the_rate_limit_is_hit_answered_429_and_recovers(
    tmp_path: Path, redis_prefix: str, serve: Callable[[object], Server]
) -> None:
    config, _ = config_file(tmp_path, redis_prefix)
    limits = {"key_rate_limits": {"slow": {"per_second": 2, "burst": 3}}}
    config = config.model_copy(update={"access": config.access.model_validate(limits)})
    store = open_key_store(config.infrastructure)
    token = create_key(store, "slow", ["decide"]).token
    fast = create_key(store, "fast", ["decide"]).token
    store.close()
    server = serve(create_app(config))
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=server.url, timeout=10, headers=headers) as http:
        statuses = [http.post("/v1/decide", json=DECIDE_PICK).status_code for _ in range(5)]
        assert statuses == [200, 200, 200, 429, 429]
        refused = http.post("/v1/decide", json=DECIDE_PICK)
        assert refused.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(refused.headers["retry-after"]) <= 2
        other = http.post("/v1/decide", json=DECIDE_PICK, headers={"Authorization": f"Bearer {fast}"})
        assert other.status_code == 200  # limits are per key
        time.sleep(1.1)
        assert http.post("/v1/decide", json=DECIDE_PICK).status_code == 200
    with Client(server.url, api_key=token, timeout=2) as client:  # over the limit: the default policy
        decisions = [client.decide("pick", f"u{i}", candidates=["a", "b"]) for i in range(6)]
        assert any(d.fallback for d in decisions)
        assert client.stats().fallbacks >= 1


def test_the_shared_bucket_holds_across_two_gatekeepers(tmp_path: Path, redis_prefix: str) -> None:
    config, _ = config_file(tmp_path, redis_prefix)
    access = config.access.model_validate({"rate_limit": {"per_second": 1, "burst": 10}})
    store = open_key_store(config.infrastructure)
    token = create_key(store, "shared", ["decide"]).token
    store.close()
    gates = [Gatekeeper.open(config.infrastructure, access) for _ in range(2)]
    admitted = 0
    for i in range(40):
        try:
            gates[i % 2].admit(f"Bearer {token}", frozenset({"decide"}))
            admitted += 1
        except RateLimitedError:
            pass
    for gate in gates:
        gate.close()
    assert 10 <= admitted <= 12  # the burst, give or take what refilled during the loop


def test_a_key_revoked_by_the_cli_is_refused_by_two_service_processes_within_seconds(
    secured: tuple[ClosedLoopConfig, Path, dict[str, str]],
) -> None:
    config, path, tokens = secured
    headers = {"Authorization": f"Bearer {tokens['reader']}"}
    with serve_in_subprocess(path) as (first, _), serve_in_subprocess(path) as (second, _):
        for url in (first, second):
            assert httpx.get(f"{url}/v1/models", headers=headers, timeout=10).status_code == 200
        revoked = CliRunner().invoke(cli, ["keys", "revoke", "reader", "-c", str(path)])
        assert revoked.exit_code == 0, revoked.output
        started = time.monotonic()
        pending = {first, second}
        while pending and time.monotonic() - started < 10:
            pending = {u for u in pending if httpx.get(f"{u}/v1/models", headers=headers).status_code != 401}
            time.sleep(0.1)
        assert not pending
        assert time.monotonic() - started < config.access.refresh_seconds + 3


def test_keys_are_made_listed_and_revoked_with_the_cli_and_never_shown_again(tmp_path: Path) -> None:
    path = tmp_path / "closedloop.yaml"
    raw = yaml.safe_load(CONFIG_YAML)
    raw["infrastructure"] = {"data_dir": str(tmp_path / "data")}
    path.write_text(yaml.safe_dump(raw))
    runner = CliRunner()
    made = runner.invoke(
        cli, ["keys", "create", "checkout", "-s", "decide", "-u", "pick", "-c", str(path), "--json"]
    )
    assert made.exit_code == 0, made.output
    created = json.loads(made.stdout)
    assert created["token"].startswith(f"cl_{created['key_id']}_")
    assert created["use_cases"] == ["pick"]
    listed = runner.invoke(cli, ["keys", "list", "-c", str(path), "--json"])
    assert created["token"] not in listed.output
    assert [k["name"] for k in json.loads(listed.stdout)] == ["checkout"]
    assert created["token"].split("_")[2] not in (tmp_path / "data" / "access" / "keys.json").read_text()
    unknown = runner.invoke(cli, ["keys", "create", "x", "-s", "decide", "-u", "nope", "-c", str(path)])
    assert unknown.exit_code != 0
    assert "nope" in str(unknown.exception)
    assert runner.invoke(cli, ["keys", "revoke", "checkout", "-c", str(path)]).exit_code == 0
    table = runner.invoke(cli, ["keys", "list", "-c", str(path)]).output
    assert "checkout" in table
    assert "UTC" in table


def test_the_audit_trail_records_experiment_start_and_stop_done_through_the_cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_evaluation_experiment import OFFER_YAML

    path = tmp_path / "closedloop.yaml"
    raw = yaml.safe_load(OFFER_YAML)
    raw["infrastructure"] = {"data_dir": str(tmp_path / "data")}
    path.write_text(yaml.safe_dump(raw))
    runner = CliRunner()
    monkeypatch.delenv("CLOSEDLOOP_API_KEY", raising=False)
    assert runner.invoke(cli, ["experiments", "start", "by_quality", "-c", str(path)]).exit_code == 0
    made = json.loads(
        runner.invoke(cli, ["keys", "create", "ops", "-s", "admin", "-c", str(path), "--json"]).stdout
    )
    monkeypatch.setenv("CLOSEDLOOP_API_KEY", made["token"])
    assert runner.invoke(cli, ["experiments", "stop", "by_quality", "-c", str(path)]).exit_code == 0
    monkeypatch.setenv("CLOSEDLOOP_API_KEY", "cl_000000000000_" + "y" * 43)
    refused = runner.invoke(cli, ["experiments", "start", "by_quality", "-c", str(path)])
    assert refused.exit_code != 0  # a key that is not known acts for nobody
    monkeypatch.delenv("CLOSEDLOOP_API_KEY")
    entries = json.loads(runner.invoke(cli, ["audit", "-c", str(path), "--json"]).stdout)
    assert [(e["action"], e["target"]) for e in entries] == [
        ("experiment.stop", "by_quality"),
        ("key.create", made["key_id"]),
        ("experiment.start", "by_quality"),
    ]
    assert entries[0]["actor"] == f"key:{made['key_id']}"
    assert entries[2]["actor"].startswith("local:")
    assert made["token"] not in json.dumps(entries)
    only = json.loads(
        runner.invoke(cli, ["audit", "-c", str(path), "--json", "--action", "experiment"]).stdout
    )
    assert len(only) == 2


def test_the_console_needs_read_for_reports_and_admin_for_actions_and_audits_them(
    tmp_path: Path, serve: Callable[[object], Server]
) -> None:
    from test_evaluation_experiment import offer_config

    config = offer_config(tmp_path)
    store = open_key_store(config.infrastructure)
    reader = create_key(store, "reader", ["read"]).token
    admin = create_key(store, "admin", ["admin"])
    store.close()
    server = serve(create_console(config))
    with httpx.Client(base_url=server.url, timeout=30) as http:
        assert http.get("/v1/experiments").status_code == 401
        read = {"Authorization": f"Bearer {reader}"}
        assert http.get("/v1/experiments", params={"format": "json"}, headers=read).status_code == 200
        assert http.post("/v1/admin/experiments/by_quality/start", headers=read).status_code == 403
        write = {"Authorization": f"Bearer {admin.token}"}
        started = http.post("/v1/admin/experiments/by_quality/start", headers=write)
        assert started.status_code == 200
        assert started.json()["phase"] == 1
        assert http.get("/v1/audit", headers=read).status_code == 403
        trail = http.get("/v1/audit", headers=write).json()
    assert trail[0]["action"] == "experiment.start"
    assert trail[0]["actor"] == f"key:{admin.key.key_id}"


def test_use_cases_serve_their_shape_and_nothing_from_the_environment_or_infrastructure(
    tmp_path: Path, serve: Callable[[object], Server]
) -> None:
    secret = "s3cr3t-from-env"
    text = CONFIG_YAML.replace("values: [us, de, fr]", "values: [us, de, '${MARKET}']") + (
        "\ninfrastructure:\n  data_dir: " + str(tmp_path / "data") + "\n  database_url: ${DB_URL}\n"
    )
    environ = {"MARKET": secret, "DB_URL": f"sqlite:///{tmp_path}/{secret}.db"}
    config = parse_config(text, environ=environ)
    assert config.use_cases["feed"].context["country"].values[2] == secret  # it is used...
    server = serve(create_app(config))
    answer = httpx.get(f"{server.url}/v1/use-cases", timeout=10)
    assert secret not in answer.text
    assert "sqlite" not in answer.text
    feed = answer.json()["feed"]
    assert feed["context"]["country"]["values"][:2] == ["us", "de"]
    assert set(feed) == {
        "decision",
        "context",
        "candidate",
        "outcomes",
        "max_candidates",
        "policy",
        "feature_names",
    }
    assert "infrastructure" not in answer.text
    assert "exploration" not in answer.text


def test_a_503_names_no_internal_address(
    tmp_path: Path, private_redis: PrivateRedis, serve: Callable[[object], Server]
) -> None:
    config = make_config(tmp_path, redis_url=private_redis.url)
    server = serve(create_app(config))
    private_redis.stop()
    answer = httpx.get(f"{server.url}/v1/models", timeout=30)
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "service_unavailable"
    assert "127.0.0.1" not in answer.text
    assert str(private_redis.port) not in answer.text


def test_serve_refuses_a_public_address_without_keys_unless_insecure(tmp_path: Path) -> None:
    path = tmp_path / "closedloop.yaml"
    raw = yaml.safe_load(CONFIG_YAML)
    raw["infrastructure"] = {"data_dir": str(tmp_path / "data")}
    path.write_text(yaml.safe_dump(raw))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOSEDLOOP_")}
    port = str(free_port())
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "closedloop.cli",
            "serve",
            "-c",
            str(path),
            "--host",
            "0.0.0.0",
            "--port",
            port,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert refused.returncode == 2
    assert "without API keys" in refused.stderr
    assert "--insecure" in refused.stderr
    with pytest.raises(ConfigError):
        require_keys_off_loopback(parse_config(yaml.safe_dump(raw), environ={}), "10.1.2.3", command="serve")
    require_keys_off_loopback(parse_config(yaml.safe_dump(raw), environ={}), "::1", command="serve")


def test_secrets_come_from_files_and_passwords_join_their_urls(tmp_path: Path) -> None:
    password = tmp_path / "redis_password"
    password.write_text("p@ss/word\n")
    text = CONFIG_YAML + "\ninfrastructure:\n  redis_url: redis://cache:6379/0\n"
    url = tmp_path / "database_url"
    url.write_text("postgresql+psycopg://app@db:5432/closedloop")
    environ = {
        "CLOSEDLOOP_REDIS_PASSWORD_FILE": str(password),
        "CLOSEDLOOP_DATABASE_URL_FILE": str(url),
        "CLOSEDLOOP_DATABASE_PASSWORD": "pg",
    }
    config = parse_config(text, environ=environ)
    assert config.infrastructure.redis_url == "redis://:p%40ss%2Fword@cache:6379/0"
    assert config.infrastructure.database_url == "postgresql+psycopg://app:pg@db:5432/closedloop"
    environ["CLOSEDLOOP_DATABASE_URL_FILE"] = str(tmp_path / "missing")
    with pytest.raises(ConfigError) as missing:
        parse_config(text, environ=environ)
    assert "CLOSEDLOOP_DATABASE_URL_FILE" in str(missing.value)


def test_serve_speaks_https_with_a_certificate_given(tmp_path: Path) -> None:
    path = tmp_path / "closedloop.yaml"
    raw = yaml.safe_load(CONFIG_YAML)
    raw["infrastructure"] = {"data_dir": str(tmp_path / "data")}
    path.write_text(yaml.safe_dump(raw))
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    self_signed = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"]
    names = ["-addext", "subjectAltName=IP:127.0.0.1"]
    files = ["-keyout", str(key), "-out", str(cert)]
    subprocess.run(["openssl", *self_signed, *names, *files], check=True, capture_output=True)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOSEDLOOP_")}
    command = [sys.executable, "-m", "closedloop.cli", "serve", "-c", str(path), "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=60)
        trusted = ssl.create_default_context(cafile=str(cert))
        assert httpx.get(f"https://127.0.0.1:{port}/healthz", verify=trusted).json() == {"status": "ok"}
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_the_audit_trail_keeps_entries_in_order_on_sqlite_and_postgresql(database: Database) -> None:
    trail = AuditLog.from_url(database.url, schema=database.schema)
    trail.record("key:abc", "experiment.start", "by_quality", phase=1)
    trail.record("local:ops@host", "key.revoke", "abc", name="checkout")
    trail.record("key:abc", "experiment.stop", "by_quality", phase=1)
    entries = trail.entries()
    assert [e.action for e in entries] == ["experiment.stop", "key.revoke", "experiment.start"]
    assert entries[1].details == {"name": "checkout"}
    assert [e.target for e in trail.entries(action="experiment", limit=1)] == ["by_quality"]
    trail.close()
    again = AuditLog.from_url(database.url, schema=database.schema)  # kept, and the table reused
    assert len(again.entries()) == 3
    again.close()


def test_the_openapi_of_both_apps_gives_every_error_its_real_body_and_the_bearer_key(
    config: ClosedLoopConfig,
) -> None:
    for app, routes in ((create_app(config), SERVICE_ROUTES), (create_console(config), CONSOLE_ROUTES)):
        schema = app.openapi()
        assert "HTTPValidationError" not in json.dumps(schema)
        assert schema["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
        for path, operations in schema["paths"].items():
            for method, operation in operations.items():
                for status, response in operation["responses"].items():
                    if status[0] in "45":
                        body = json.dumps(response)
                        assert "ErrorBody" in body, (path, method, status)
                if routes.needed(path):
                    assert {"401", "403", "429"} <= set(operation["responses"]), (path, method)
                    assert operation["security"], (path, method)
