"""Helper processes that end with the process they serve.

A `concurrent.futures.ProcessPoolExecutor` worker whose parent is killed (SIGKILL, the OOM killer)
waits for work forever: it holds both ends of its own task queue, so it never sees the parent
go. Its fork server and the resource tracker live on with it (seen: a trainer or a report killed
mid-read left four processes each). `exit_with` is a pool's initializer that ends the worker once
the process that started it is gone; the fork server and the tracker then end on their own.
"""

from __future__ import annotations

import os
import threading
import time

_INTERVAL = 0.5
"""Seconds between two looks at the parent."""


def exit_with(parent: int) -> None:
    """End this process once process ``parent`` is gone (checked every half second)."""
    threading.Thread(target=_watch, args=(parent,), name="parent-watch", daemon=True).start()


def _watch(parent: int) -> None:
    while True:
        time.sleep(_INTERVAL)
        try:
            os.kill(parent, 0)
        except (ProcessLookupError, PermissionError):  # gone (or its pid now another user's)
            os._exit(0)
