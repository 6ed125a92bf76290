"""A client generated from the service's OpenAPI description, in another language: TypeScript
types by openapi-typescript, compiled by tsc (strict), run by Node against the real service with
an API key. The request, the answer and the error body all type-check against the description."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from conftest import Server, config_file

from closedloop.access import create_key, open_key_store
from closedloop.decision_service import create_app

CLIENT = Path(__file__).resolve().parents[1] / "clients" / "typescript"

pytestmark = pytest.mark.integration


def _run(*command: str) -> str:
    done = subprocess.run(command, cwd=CLIENT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_a_generated_typescript_client_compiles_and_decides_against_the_service(
    tmp_path: Path, redis_prefix: str, serve: Callable[[object], Server]
) -> None:
    npm = shutil.which("npm")
    assert npm is not None, "Node.js and npm are needed (dev.sh installs the client's packages)"
    if not (CLIENT / "node_modules").exists():
        _run(npm, "ci", "--no-audit", "--no-fund")
    config, _ = config_file(tmp_path, redis_prefix)
    store = open_key_store(config.infrastructure)
    token = create_key(store, "typescript", ["decide"]).token
    store.close()
    server = serve(create_app(config))
    (CLIENT / "openapi.json").write_text(httpx.get(f"{server.url}/openapi.json").text)
    _run(npm, "run", "--silent", "generate")
    _run(npm, "run", "--silent", "build")
    node = shutil.which("node") or "node"
    answer = json.loads(_run(node, "dist/example.js", server.url, token).strip().splitlines()[-1])
    assert answer["choice"] in {"a", "b"}
    assert 0 < answer["propensity"] <= 1
    assert answer["feedback"] == "accepted"
    assert answer["error_status"] == 422
    assert answer["error_field"] == "candidates[0].features.price"
