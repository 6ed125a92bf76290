"""No Docker engine runs here: check that docker-compose.yml agrees with the code instead."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from typer.testing import CliRunner

from closedloop.cli import app
from closedloop.contracts import ENVIRONMENT_VARIABLES, load_config

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def _port(service: str) -> int:
    return int(SERVICES[service]["ports"][0].split(":")[1])


def test_every_store_the_code_uses_is_a_service() -> None:
    assert {"redis", "kafka", "postgres", "decision-service", "trainer"} <= set(SERVICES)
    assert SERVICES["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft


def test_the_service_environment_names_real_settings_and_points_at_the_services() -> None:
    env = SERVICES["decision-service"]["environment"]
    assert set(env) <= set(ENVIRONMENT_VARIABLES.values())
    assert env["CLOSEDLOOP_REDIS_URL"] == f"redis://redis:{_port('redis')}/0"
    internal_kafka = SERVICES["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"].split(",")[0]
    assert internal_kafka == f"PLAINTEXT://{env['CLOSEDLOOP_KAFKA_BOOTSTRAP']}"
    assert f"@postgres:{_port('postgres')}/" in env["CLOSEDLOOP_DATABASE_URL"]
    config = load_config(ROOT / "examples" / "closedloop.yaml", environ=env)
    assert config.infrastructure.redis_url == env["CLOSEDLOOP_REDIS_URL"]
    assert config.infrastructure.kafka_bootstrap == env["CLOSEDLOOP_KAFKA_BOOTSTRAP"]


def test_the_service_command_is_a_real_cli_invocation() -> None:
    command = SERVICES["decision-service"]["command"]
    assert command[:2] == ["closedloop", "serve"]
    port = command[command.index("--port") + 1]
    assert SERVICES["decision-service"]["ports"][0] == f"{port}:{port}"
    mounted = SERVICES["decision-service"]["volumes"][0].split(":")
    assert (ROOT / mounted[0]).exists()
    assert command[command.index("--config") + 1] == mounted[1]
    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--config", "--host", "--port"):
        assert option in result.output


def test_the_trainer_shares_the_services_stores_and_runs_a_real_command() -> None:
    trainer, service = SERVICES["trainer"], SERVICES["decision-service"]
    for variable in ("CLOSEDLOOP_REDIS_URL", "CLOSEDLOOP_KAFKA_BOOTSTRAP", "CLOSEDLOOP_DATABASE_URL"):
        assert trainer["environment"][variable] == service["environment"][variable]
    command = trainer["command"]
    assert command[:2] == ["closedloop", "train"]
    assert trainer["volumes"][0].split(":")[1] == command[command.index("--config") + 1]
    result = CliRunner().invoke(app, ["train", "--help"])
    assert result.exit_code == 0
    for option in ("--config", "--interval", "--once"):
        assert option in result.output


def test_long_running_services_restart_and_wait_for_the_stores_they_need_at_start() -> None:
    """`depends_on` alone starts a container before its store accepts connections: the trainer
    would die on a PostgreSQL still initialising and, without a restart policy, stay dead."""
    for name in ("decision-service", "trainer"):
        service = SERVICES[name]
        assert service["restart"] == "unless-stopped"
        for store, rule in service["depends_on"].items():
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[store], (name, store)
    assert SERVICES["decision-service"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert {rule["condition"] for rule in SERVICES["trainer"]["depends_on"].values()} == {"service_healthy"}
    # Each health check asks the port the service listens on.
    assert str(_port("redis")) in SERVICES["redis"]["healthcheck"]["test"]
    assert f"localhost:{_port('kafka')}" in SERVICES["kafka"]["healthcheck"]["test"][1]
    assert f"-p {_port('postgres')}" in SERVICES["postgres"]["healthcheck"]["test"][1]
    port = SERVICES["decision-service"]["ports"][0].split(":")[1]
    probe = SERVICES["decision-service"]["healthcheck"]["test"][-1]
    assert f"localhost:{port}/healthz" in probe


def _extra_requirements(extra: str, extras: dict[str, list[str]]) -> set[str]:
    """Distribution names an extra pulls in, following closedloop[...] self-references."""
    names: set[str] = set()
    for requirement in extras[extra]:
        name = re.split(r"[<>=\[ ;]", requirement, maxsplit=1)[0].lower()
        if name == "closedloop":
            for inner in re.findall(r"\[(.*?)\]", requirement)[0].split(","):
                names |= _extra_requirements(inner.strip(), extras)
        else:
            names.add(name)
    return names


def test_the_image_installs_what_the_compose_commands_import() -> None:
    """The trainer needs SQLAlchemy and psycopg (the compose database is PostgreSQL); the
    service's report pages need the evaluation extra. All run from the one image."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    install = re.search(r'pip install[^\n]*"\.\[([a-z,]+)\]"', (ROOT / "Dockerfile").read_text())
    assert install is not None
    installed = set().union(*(_extra_requirements(e, extras) for e in install.group(1).split(",")))
    assert {"sqlalchemy", "psycopg", "statsmodels", "fastapi", "kafka-python", "redis"} <= installed
