"""The `closedloop` command: one entry point for every job."""

from ._app import app, main

__all__ = ["app", "main"]
