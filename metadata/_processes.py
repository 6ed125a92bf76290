"""Process lifetimes: helper processes that end with the process they serve, and start-up
objects kept out of the garbage collector's way.

A `concurrent.futures.ProcessPoolExecutor` worker whose parent is killed (SIGKILL, the OOM killer)
waits for work forever: it holds both ends of its own task queue, so it never sees the parent
go. Its fork server and the resource tracker live on with it (seen: a trainer or a report killed
mid-read left four processes each). `exit_with` is a pool's initializer that ends the worker once
the process that started it is gone; the fork server and the tracker then end on their own.
"""

from __future__ import annotations

import gc
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


def freeze_startup_objects() -> None:
    """Leave everything alive now (the modules, the configuration, the open stores) out of every
    later garbage collection, for a long-running process once it has started.

    A full collection visits every object the collector tracks, and a process that imports
    LightGBM, pandas, SQLAlchemy and pyarrow tracks hundreds of thousands that live as long as it
    does; a catch-up that unpickles and stores large batches triggers such a collection every
    few seconds. Frozen (`gc.freeze`), they are skipped: the trainer's process spent 2.6 s of a
    1,000,000-decision catch-up in full collections, 0.4 s after (bench/trainer_throughput.py),
    and an experiment report over 1,000,000 decisions ran ~8% faster; over 10,000,000, whose
    decoding workers freeze what their fork server imported, 91.5 / 86.0 -> 67.7 / 73.1 s
    (bench/experiment_report.py).
    Called once per process, after a collection (so that no garbage is frozen): an object frozen
    is never collected, so one freed later as part of a reference cycle would stay (acyclic ones
    are freed by their reference count). `closedloop serve` does the same for its app (without
    importing this package's SQLAlchemy)."""
    gc.collect()
    gc.freeze()
