"""Logging for the long-running commands (serve, console, train, tune): one line per event, as
text for people or JSON for log collectors, at the level asked for.

Library code only creates loggers (``logging.getLogger(__name__)``); this is the one place that
configures handlers, for the process the command runs.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

import typer


class LogFormat(StrEnum):
    text = "text"
    json = "json"


LogLevelOption = Annotated[
    str, typer.Option("--log-level", help="debug, info, warning or error.", envvar="CLOSEDLOOP_LOG_LEVEL")
]
LogFormatOption = Annotated[
    LogFormat, typer.Option("--log-format", help="text (for people) or json (one object a line).")
]
_TEXT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str = "info", log_format: LogFormat = LogFormat.text) -> None:
    """Root handler on stderr; uvicorn's own loggers go through it too, in the same format."""
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise typer.BadParameter(f"unknown log level {level!r}: use debug, info, warning or error")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format is LogFormat.json else logging.Formatter(_TEXT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    for noisy in ("kafka", "urllib3", "httpx", "matplotlib"):  # their INFO is about their own internals
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))
