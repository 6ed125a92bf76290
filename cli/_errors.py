"""One line instead of a traceback for the two failures a user fixes outside the code: a package
of an extra that is not installed, and a server that cannot be reached."""

from __future__ import annotations

_EXTRA_OF = {
    "lightgbm": "embedded",
    "numpy": "embedded",
    "prometheus_client": "embedded",
    "fastapi": "service",
    "starlette": "service",
    "uvicorn": "service",
    "orjson": "service",
    "redis": "service",
    "kafka": "service",
    "confluent_kafka": "service",
    "sqlalchemy": "service",
    "psycopg": "service",
    "rich": "service",
    "scipy": "trainer",
    "sklearn": "trainer",
    "matplotlib": "trainer",
    "statsmodels": "evaluation",
    "ax": "tuner",
    "torch": "tuner",
    "botorch": "tuner",
}

# (module prefix, class name) -> which store and the setting that names it
_SERVERS = {
    ("redis", "ConnectionError"): ("Redis", "CLOSEDLOOP_REDIS_URL"),
    ("redis", "TimeoutError"): ("Redis", "CLOSEDLOOP_REDIS_URL"),
    ("redis", "AuthenticationError"): ("Redis (password refused)", "CLOSEDLOOP_REDIS_PASSWORD"),
    ("sqlalchemy", "OperationalError"): ("the metadata database", "CLOSEDLOOP_DATABASE_URL"),
    ("kafka", "NoBrokersAvailable"): ("Kafka", "CLOSEDLOOP_KAFKA_BOOTSTRAP"),
    ("kafka", "KafkaConnectionError"): ("Kafka", "CLOSEDLOOP_KAFKA_BOOTSTRAP"),
}


def missing_package(error: ImportError) -> str:
    module = (error.name or "").partition(".")[0]
    extra = _EXTRA_OF.get(module)
    if extra is None:
        return f"{error} (reinstall closedloop: pip install 'closedloop[all]')"
    if extra == "tuner":
        return (
            f"this command needs {module}, from the tuner extra: pip install torch==2.13.0 "
            "--index-url https://download.pytorch.org/whl/cpu && pip install 'closedloop[tuner]'"
        )
    return f"this command needs {module}, from the {extra} extra: pip install 'closedloop[{extra}]'"


def unreachable_server(error: BaseException) -> str | None:
    """A one-line message if ``error`` (or its cause) says a server cannot be reached, else None."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        module = type(current).__module__.partition(".")[0]
        found = _SERVERS.get((module, type(current).__name__))
        if found is not None:
            store, setting = found
            detail = str(current).strip().splitlines()[0] if str(current).strip() else type(current).__name__
            return (
                f"{store} cannot be reached ({detail[:200]}). Check {setting} and that the server is running."
            )
        current = current.__cause__ or current.__context__
    return None
