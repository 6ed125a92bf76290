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
==========================  =============================  =====================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

ENVIRONMENT_VARIABLES: dict[str, str] = {
    "redis_url": "CLOSEDLOOP_REDIS_URL",
    "kafka_bootstrap": "CLOSEDLOOP_KAFKA_BOOTSTRAP",
    "database_url": "CLOSEDLOOP_DATABASE_URL",
    "data_dir": "CLOSEDLOOP_DATA_DIR",
    "key_prefix": "CLOSEDLOOP_KEY_PREFIX",
    "topic_prefix": "CLOSEDLOOP_TOPIC_PREFIX",
}


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

    @field_validator("redis_url", "kafka_bootstrap", "database_url", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # ``${CLOSEDLOOP_REDIS_URL:-}`` in YAML expands to "" when the variable is not set.
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_path / 'closedloop.db'}"

    def with_environment(self, environ: Mapping[str, str] | None = None) -> InfrastructureConfig:
        """This configuration with every setting the environment gives replaced by it."""
        env = os.environ if environ is None else environ
        overrides = {field: env[var] for field, var in ENVIRONMENT_VARIABLES.items() if env.get(var)}
        return self.model_validate({**self.model_dump(), **overrides}) if overrides else self
