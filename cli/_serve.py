"""`closedloop serve`: the decision service under uvicorn, in one process or several workers.

Workers are separate processes (Python serves one request at a time per process), so everything
they share lives outside them: the decision index in Redis (a feedback may reach another worker
than its decision), the events in Kafka behind an outbox slot per worker, and the Prometheus
metrics in prometheus_client's multiprocess files, summed when scraped.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from closedloop.contracts import ClosedLoopConfig, ConfigError, load_config, redact_url

from ._logging import LogFormat, configure_logging

logger = logging.getLogger("closedloop.cli")

if TYPE_CHECKING:
    from fastapi import FastAPI

_CONFIG_ENV = "CLOSEDLOOP_SERVE_CONFIG"
_REFRESH_ENV = "CLOSEDLOOP_SERVE_REFRESH"
_METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own switch to multiprocess mode
_LOG_ENV = "CLOSEDLOOP_SERVE_LOG"  # "<level> <format>", for the worker processes


def run_service(
    config_path: Path,
    *,
    host: str,
    port: int,
    refresh_interval: float,
    workers: int,
    insecure: bool = False,
    tls: TlsFiles | None = None,
    log_level: str = "info",
    log_format: LogFormat = LogFormat.text,
) -> None:
    import uvicorn

    from closedloop.decision_service import JsonErrorHttpProtocol

    configure_logging(log_level, log_format)
    loaded = load_config(config_path)
    if not insecure:
        require_keys_off_loopback(loaded, host, command="serve")
    log_start(loaded, "decision service", host, port, tls, workers)
    certfile, keyfile = tls_paths(tls)
    run = functools.partial(  # log_config=None: uvicorn's loggers use the handler configure_logging set
        uvicorn.run,
        host=host,
        port=port,
        log_level=log_level,
        log_config=None,
        access_log=False,
        http=JsonErrorHttpProtocol,
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
    )
    if workers == 1:
        run(build_service(loaded, refresh_interval))
        return
    require_shared_stores(loaded, workers)
    os.environ[_CONFIG_ENV] = str(config_path.resolve())
    os.environ[_REFRESH_ENV] = str(refresh_interval)
    metrics_dir = loaded.infrastructure.data_path / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)  # counts start with the service, as with one process
    metrics_dir.mkdir(parents=True)
    os.environ[_METRICS_ENV] = str(metrics_dir)
    os.environ[_LOG_ENV] = f"{log_level} {log_format.value}"
    run("closedloop.cli._serve:worker_service", factory=True, workers=workers)


@dataclass(frozen=True)
class TlsFiles:
    """A certificate (chain) and its private key, PEM: uvicorn serves HTTPS with them."""

    certfile: Path
    keyfile: Path

    @property
    def paths(self) -> tuple[str, str]:
        return str(self.certfile), str(self.keyfile)


def tls_paths(tls: TlsFiles | None) -> tuple[str | None, str | None]:
    """uvicorn's ssl_certfile and ssl_keyfile (None, None: plain HTTP)."""
    return tls.paths if tls is not None else (None, None)


def log_start(
    config: ClosedLoopConfig, what: str, host: str, port: int, tls: TlsFiles | None, workers: int = 1
) -> None:
    """Say what starts and on which stores (passwords redacted)."""
    infrastructure = config.infrastructure
    stores = {
        "registry and index": redact_url(infrastructure.redis_url)
        if infrastructure.redis_url
        else f"local ({infrastructure.data_path})",
        "events": infrastructure.kafka_bootstrap or f"files ({infrastructure.data_path / 'events'})",
        "metadata": redact_url(infrastructure.resolved_database_url),
    }
    scheme = "https" if tls else "http"
    logger.info(
        "%s starting on %s://%s:%d (%d worker(s)); use cases %s; %s",
        what,
        scheme,
        host,
        port,
        workers,
        ", ".join(config.use_cases),
        "; ".join(f"{name}: {where}" for name, where in stores.items()),
    )


def require_keys_off_loopback(config: ClosedLoopConfig, host: str, *, command: str) -> None:
    """Refuse to listen beyond this machine while any caller could do anything (no key exists)."""
    from closedloop.access import list_keys, open_key_store

    if _is_loopback(host):
        return
    store = open_key_store(config.infrastructure)
    try:
        keys = list_keys(store)
    finally:
        store.close()
    if not keys:
        raise ConfigError(
            f"closedloop {command} will not listen on {host} without API keys: anyone who can reach "
            "it could decide, report outcomes, read every model and run admin actions.",
            field="--host",
            value=host,
            expected="a loopback address (127.0.0.1, ::1, localhost), or API keys made",
            hint="Make keys first (closedloop keys create NAME --scope decide), or pass --insecure if "
            "something in front of it (a proxy, a private network) already keeps strangers out.",
        )


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_shared_stores(config: ClosedLoopConfig, workers: int) -> None:
    shared = {
        "redis_url": config.infrastructure.redis_url,
        "kafka_bootstrap": config.infrastructure.kafka_bootstrap,
    }
    for field, value in shared.items():
        if not value:
            raise ConfigError(
                f"{workers} workers need infrastructure.{field}: each worker is its own process, and "
                "the decision index (Redis) and the event log (Kafka) must be shared between them.",
                field=f"infrastructure.{field}",
                value=value,
                expected=f"set (or CLOSEDLOOP_{field.upper()})",
                hint="Serve with --workers 1 on embedded defaults.",
            )


def worker_service() -> FastAPI:
    """The app of one worker process (uvicorn's factory), configured by the parent's environment."""
    from prometheus_client import multiprocess

    level, log_format = os.environ.get(_LOG_ENV, "info text").split()
    configure_logging(level, LogFormat(log_format))
    metrics_dir = Path(os.environ[_METRICS_ENV])
    for pid in _dead_pids(metrics_dir):  # a worker uvicorn replaced: drop its live gauges
        multiprocess.mark_process_dead(pid, str(metrics_dir))  # type: ignore[no-untyped-call]
    loaded = load_config(Path(os.environ[_CONFIG_ENV]))
    return build_service(loaded, float(os.environ[_REFRESH_ENV]))


def build_service(config: ClosedLoopConfig, refresh_interval: float) -> FastAPI:
    from closedloop.decision_service import create_app

    service = create_app(config, refresh_interval=refresh_interval)
    # Everything loaded so far (libraries, config, models) lives as long as the process: moved out
    # of the collector's reach, a full collection scans only what requests leave behind, instead
    # of pausing every request for the ~100 ms a scan of all of it takes.
    gc.collect()
    gc.freeze()
    return service


def _dead_pids(metrics_dir: Path) -> set[int]:
    pids = set()
    for path in metrics_dir.glob("*.db"):
        suffix = path.stem.rsplit("_", 1)[-1]
        if suffix.isdigit() and not _alive(int(suffix)):
            pids.add(int(suffix))
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as someone else's process
        return True
    return True
