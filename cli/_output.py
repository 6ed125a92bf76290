"""How commands print: a table for people by default, JSON with ``--json`` for scripts.

Times print as UTC dates in tables and ISO 8601 strings in JSON, never as epoch floats.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def when(timestamp: float | None) -> str:
    """A Unix time as a UTC date for tables ("" for none)."""
    if timestamp is None:
        return ""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(timestamp: float | None) -> str | None:
    """A Unix time as ISO 8601 for JSON."""
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC).isoformat()


def print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, default=str))


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(*headers, title=title, title_justify="left")
    for row in rows:
        table.add_row(*("" if cell is None else str(cell) for cell in row))
    # On a terminal, its width; piped (a file, grep, a test), wide enough not to wrap a row.
    Console(width=None if sys.stdout.isatty() else 240).print(table)
