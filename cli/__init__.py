"""The `closedloop` command: one entry point for every job."""

from closedloop.cli._app import app, main

__all__ = ["app", "main"]
