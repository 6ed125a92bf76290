"""No Docker engine runs here: check docker-compose.yml, the Dockerfile and .dockerignore against
the code instead, and that the deployment is safe to put on a network (issue #14)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml
from typer.testing import CliRunner

from closedloop.cli import app
from closedloop.contracts import ENVIRONMENT_VARIABLES, load_config

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
SERVICES = COMPOSE["services"]
OURS = ("decision-service", "console", "trainer", "tuner")
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def _published_port(service: str) -> int:
    return int(SERVICES[service]["ports"][0].rsplit(":", 2)[-1])


def _option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_every_store_the_code_uses_is_a_service() -> None:
    assert {"redis", "kafka", "postgres", *OURS} <= set(SERVICES)
    assert SERVICES["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft


def test_the_stores_are_not_published_and_ours_only_on_the_bind_address() -> None:
    for store in ("redis", "kafka", "postgres"):
        assert "ports" not in SERVICES[store], store
    assert "EXTERNAL" not in SERVICES["kafka"]["environment"]["KAFKA_LISTENERS"]
    for name in ("decision-service", "console"):
        (mapping,) = SERVICES[name]["ports"]
        assert mapping.startswith("${CLOSEDLOOP_BIND:-127.0.0.1}:"), mapping
    example = dict(
        line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines() if "=" in line
    )
    assert example["CLOSEDLOOP_BIND"] == "127.0.0.1"


def test_passwords_come_from_env_as_secrets_and_nothing_secret_is_committed() -> None:
    assert "closedloop:closedloop@" not in COMPOSE_TEXT
    assert "POSTGRES_PASSWORD:" not in yaml.safe_dump(SERVICES["postgres"]["environment"])
    assert SERVICES["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert "--requirepass" in " ".join(SERVICES["redis"]["command"])
    assert "/run/secrets/redis_password" in " ".join(SERVICES["redis"]["command"])
    assert COMPOSE["secrets"]["redis_password"] == {"environment": "REDIS_PASSWORD"}
    assert COMPOSE["secrets"]["postgres_password"] == {"environment": "POSTGRES_PASSWORD"}
    required = " ".join(COMPOSE["x-required-settings"])
    assert "${REDIS_PASSWORD:?" in required
    assert "${POSTGRES_PASSWORD:?" in required
    example = (ROOT / ".env.example").read_text()
    assert "REDIS_PASSWORD=change-me" in example
    assert "POSTGRES_PASSWORD=change-me" in example
    assert ".env" in (ROOT / ".gitignore").read_text().split()
    assert ".env" in (ROOT / ".dockerignore").read_text().split()


def test_our_services_read_the_passwords_from_files_that_the_settings_know(tmp_path: Path) -> None:
    for name in OURS:
        service = SERVICES[name]
        env = service["environment"]
        assert set(service["secrets"]) == {"redis_password", "postgres_password"}
        variables = {key.removesuffix("_FILE") for key in env}
        assert variables <= set(ENVIRONMENT_VARIABLES.values()), name
        assert env["CLOSEDLOOP_REDIS_PASSWORD_FILE"] == "/run/secrets/redis_password"
        assert env["CLOSEDLOOP_DATABASE_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    env = dict(SERVICES["decision-service"]["environment"])
    for secret in ("redis_password", "postgres_password"):  # what the secrets hold, here as files
        (tmp_path / secret).write_text(f"{secret}-value\n")
        variable = next(k for k, v in env.items() if v == f"/run/secrets/{secret}")
        env[variable] = str(tmp_path / secret)
    config = load_config(ROOT / "examples" / "closedloop.yaml", environ=env)
    assert config.infrastructure.redis_url == "redis://:redis_password-value@redis:6379/0"
    assert config.infrastructure.database_url == (
        "postgresql+psycopg://closedloop:postgres_password-value@postgres:5432/closedloop"
    )
    assert config.infrastructure.kafka_bootstrap == env["CLOSEDLOOP_KAFKA_BOOTSTRAP"]
    internal_kafka = SERVICES["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert internal_kafka == f"PLAINTEXT://{env['CLOSEDLOOP_KAFKA_BOOTSTRAP']}"


def test_the_commands_are_real_cli_invocations_on_the_mounted_config() -> None:
    expected = {
        "decision-service": ["serve"],
        "console": ["console"],
        "trainer": ["train"],
        "tuner": ["tune", "status"],
    }
    runner = CliRunner()
    for name, words in expected.items():
        command = SERVICES[name]["command"]
        assert command[: 1 + len(words)] == ["closedloop", *words], name
        mounted = SERVICES[name]["volumes"][0].split(":")
        assert (ROOT / mounted[0]).exists()
        assert _option(command, "--config") == mounted[1]
        help_text = runner.invoke(app, [*words, "--help"])
        assert help_text.exit_code == 0, (name, help_text.output)
        options = [word for word in command if word.startswith("--")]
        for option in options:
            assert option in help_text.output, (name, option)
    for name in ("decision-service", "console"):
        command = SERVICES[name]["command"]
        assert _published_port(name) == int(_option(command, "--port"))
        assert "--insecure" not in command  # it refuses to start until a key exists


def test_long_running_services_restart_and_wait_for_the_stores_they_need_at_start() -> None:
    """`depends_on` alone starts a container before its store accepts connections: the trainer
    would die on a PostgreSQL still initialising and, without a restart policy, stay dead."""
    for name in ("decision-service", "console", "trainer"):
        service = SERVICES[name]
        assert service["restart"] == "unless-stopped"
        for store, rule in service["depends_on"].items():
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in SERVICES[store], (name, store)
    assert SERVICES["decision-service"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert {rule["condition"] for rule in SERVICES["trainer"]["depends_on"].values()} == {"service_healthy"}
    redis_probe = SERVICES["redis"]["healthcheck"]["test"][1]
    assert "REDISCLI_AUTH" in redis_probe  # Redis asks for the password, its health check too
    assert "localhost:19092" in SERVICES["kafka"]["healthcheck"]["test"][1]
    assert "-p 5432" in SERVICES["postgres"]["healthcheck"]["test"][1]
    probe = SERVICES["decision-service"]["healthcheck"]["test"][-1]
    assert f"localhost:{_published_port('decision-service')}/healthz" in probe


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


def _stage(name: str) -> str:
    match = re.search(rf"^FROM \S+ AS {name}\n(.*?)(?=^FROM |\Z)", DOCKERFILE, re.MULTILINE | re.DOTALL)
    assert match is not None, name
    return match.group(1)


def _installed(stage: str) -> set[str]:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    install = re.search(r'pip install[^\n]*"\.\[([a-z,]+)\]"', _stage(stage))
    assert install is not None, stage
    return set().union(*(_extra_requirements(e, extras) for e in install.group(1).split(",")))


def test_the_service_image_has_what_its_commands_import_and_no_torch_or_ax() -> None:
    service = _installed("service")
    assert {"sqlalchemy", "psycopg", "statsmodels", "fastapi", "kafka-python", "redis"} <= service
    assert not {"torch", "ax-platform", "botorch"} & service
    assert "torch" not in _stage("service")
    assert {"ax-platform"} <= _installed("tuner")
    assert "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in _stage("tuner")
    # the default target (the last stage) is the service; compose names its targets
    assert DOCKERFILE.rstrip().rsplit("\nFROM ", 1)[1].startswith("base AS service")
    assert SERVICES["tuner"]["build"]["target"] == "tuner"
    assert all(
        SERVICES[n]["build"]["target"] == "service" for n in ("decision-service", "console", "trainer")
    )


def test_the_images_run_as_an_unprivileged_user_and_the_context_leaves_the_venv_out() -> None:
    for stage in ("service", "tuner"):
        users = re.findall(r"^USER (\S+)", _stage(stage), re.MULTILINE)
        assert users, stage
        assert users[-1] not in {"root", "0"}, stage
    assert "useradd" in DOCKERFILE
    assert "chown closedloop" in DOCKERFILE  # the outbox volume is writable by that user
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv/", ".git/", ".closedloop/"} <= set(ignored)


def test_the_dask_profile_runs_a_scheduler_and_two_workers_of_the_trainers_image() -> None:
    scheduler, worker = SERVICES["dask-scheduler"], SERVICES["dask-worker"]
    assert scheduler["profiles"] == worker["profiles"] == ["dask"]  # not started by a plain `up`
    assert scheduler["image"] == worker["image"] == SERVICES["trainer"]["image"]
    assert scheduler["build"]["target"] == worker["build"]["target"] == "service"
    port = _option(scheduler["command"], "--port")
    assert worker["command"][:3] == ["dask", "worker", f"tcp://dask-scheduler:{port}"]
    assert worker["deploy"]["replicas"] >= 2
    assert {"dask", "distributed"} <= _installed("service")  # the `dask` command and LightGBM's Dask layer
    assert "scheduler: tcp://dask-scheduler:" + port in COMPOSE_TEXT  # the comment says how to point at it
    assert not {"ports"} & (scheduler.keys() | worker.keys())  # the cluster stays inside the network
