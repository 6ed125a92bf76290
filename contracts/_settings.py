"""Where closedloop's stores live, resolved in one order: environment, then file, then default.

Each setting can be given in the ``infrastructure:`` block of ``closedloop.yaml`` or by the
environment variable named next to it below; the environment wins, so the same file serves a
laptop (embedded defaults: no servers) and a deployment (``docker-compose.yml`` sets the variables).

==========================  =============================  =====================================
setting                     environment variable           default
==========================  =============================  =====================================
redis_url                   CLOSEDLOOP_REDIS_URL           none: models kept under ``data_dir``
kafka_bootstrap             CLOSEDLOOP_KAFKA_BOOTSTRAP     none: events in files under ``data_dir``
database_url                CLOSEDLOOP_DATABASE_URL        sqlite under ``data_dir``
data_dir                    CLOSEDLOOP_DATA_DIR            ``.closedloop``
key_prefix                  CLOSEDLOOP_KEY_PREFIX          ``closedloop``
topic_prefix                CLOSEDLOOP_TOPIC_PREFIX        ``closedloop``
redis_password              CLOSEDLOOP_REDIS_PASSWORD      none (or in ``redis_url``)
database_password           CLOSEDLOOP_DATABASE_PASSWORD   none (or in ``database_url``)
==========================  =============================  =====================================

Every variable can instead name a file holding the value, as ``<VARIABLE>_FILE`` (Docker and
Kubernetes secrets): ``CLOSEDLOOP_REDIS_PASSWORD_FILE=/run/secrets/redis_password``. A password
given apart from its URL is put into the URL when the URL carries none, so the URLs in the
configuration can stay free of secrets.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ._errors import ConfigError

ENVIRONMENT_VARIABLES: dict[str, str] = {
    "redis_url": "CLOSEDLOOP_REDIS_URL",
    "kafka_bootstrap": "CLOSEDLOOP_KAFKA_BOOTSTRAP",
    "database_url": "CLOSEDLOOP_DATABASE_URL",
    "data_dir": "CLOSEDLOOP_DATA_DIR",
    "key_prefix": "CLOSEDLOOP_KEY_PREFIX",
    "topic_prefix": "CLOSEDLOOP_TOPIC_PREFIX",
    "redis_password": "CLOSEDLOOP_REDIS_PASSWORD",
    "database_password": "CLOSEDLOOP_DATABASE_PASSWORD",
}
_PASSWORD_FOR = {"redis_url": "redis_password", "database_url": "database_password"}


class InfrastructureConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    redis_url: str | None = None
    """Redis holding the model registry and the decision index, e.g. redis://localhost:6379/0."""
    kafka_bootstrap: str | None = None
    """Kafka bootstrap servers for the decision and feedback topics, e.g. localhost:9092."""
    database_url: str | None = None
    """SQLAlchemy URL of the metadata database (training examples, runs, experiments)."""
    data_dir: str = ".closedloop"
    """Local directory for embedded stores and the durable event outbox."""
    key_prefix: str = Field("closedloop", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    """Prefix of every Redis key closedloop writes."""
    topic_prefix: str = Field("closedloop", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    """Prefix of the Kafka topics: <prefix>.decisions and <prefix>.feedback."""
    max_orphans_per_second: float = Field(1000.0, gt=0)
    """Reports for unknown decisions each service process keeps per second (bursts of ten seconds'
    worth pass); beyond it they are answered 404 but not logged, and counted
    (``closedloop_orphans_dropped``): a flood of made-up decision ids cannot fill the log or Redis."""

    redis_password: str | None = Field(None, repr=False)
    """Redis's password (``requirepass``), put into ``redis_url`` when that has none."""
    database_password: str | None = Field(None, repr=False)
    """The metadata database's password, put into ``database_url`` when that has none."""

    @field_validator(
        "redis_url", "kafka_bootstrap", "database_url", "redis_password", "database_password", mode="before"
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # ``${CLOSEDLOOP_REDIS_URL:-}`` in YAML expands to "" when the variable is not set.
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _passwords_into_urls(self) -> InfrastructureConfig:
        for url_field, password_field in _PASSWORD_FOR.items():
            url, password = getattr(self, url_field), getattr(self, password_field)
            if url and password:
                object.__setattr__(self, url_field, _with_password(url, password))
        return self

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_path / 'closedloop.db'}"

    def with_environment(self, environ: Mapping[str, str] | None = None) -> InfrastructureConfig:
        """This configuration with every setting the environment gives replaced by it."""
        env = os.environ if environ is None else environ
        overrides = {
            field: value
            for field, variable in ENVIRONMENT_VARIABLES.items()
            if (value := _from_environment(variable, env)) is not None
        }
        return self.model_validate({**self.model_dump(), **overrides}) if overrides else self


def _from_environment(variable: str, env: Mapping[str, str]) -> str | None:
    """``variable``'s value, or the content of the file ``<variable>_FILE`` names; None if neither."""
    if env.get(variable):
        return env[variable]
    path = env.get(f"{variable}_FILE")
    if not path:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(
            f"{variable}_FILE names {path}, which cannot be read: {exc.strerror}.",
            field=f"{variable}_FILE",
            value=path,
            expected="a readable file holding the value",
            hint=f"Mount the secret at that path, or set {variable} itself.",
        ) from None


def _with_password(url: str, password: str) -> str:
    """``url`` with ``password`` in its network location, unless it carries one already."""
    parts = urlsplit(url)
    if parts.password is not None or not parts.hostname:
        return url
    user = parts.username or ""
    netloc = f"{user}:{quote(password, safe='')}@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit(parts._replace(netloc=netloc))


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
