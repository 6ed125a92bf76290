"""The metadata database (SQLite by default, PostgreSQL in deployments) and the audit trail in it.

- `open_database(url, schema=)`: one engine setup for everything that keeps state there: the
  trainer's examples and runs, the tuner's trials, the audit trail
- `AuditLog`: who did which admin action when (`AuditEntry`); `local_actor()` names the user of
  a CLI command
- `ProcessLock`: a named lock that lives as long as the process holding it (one tuner per run,
  one leading trainer)
- `exit_with(pid)`: a worker pool's initializer that ends the worker once the process that
  started it is gone (a trainer's preparing worker, a report's decoding workers)
- `freeze_startup_objects()`: a long-running process's start-up objects out of the garbage
  collector's way (the trainer and its preparing worker, the console, a report and its
  decoding workers)
"""

from ._audit import AuditEntry, AuditLog, local_actor
from ._database import open_database
from ._locks import ProcessLock
from ._processes import exit_with, freeze_startup_objects

__all__ = [
    "AuditEntry",
    "AuditLog",
    "ProcessLock",
    "exit_with",
    "freeze_startup_objects",
    "local_actor",
    "open_database",
]
