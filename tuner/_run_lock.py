"""One tuner process per run: two processes on one run would each deploy rounds and attach trials
to the same Ax experiment. The lock (`closedloop.metadata.ProcessLock`) goes with its holder, so
a killed tuner can be restarted at once and a second one is refused."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from sqlalchemy.engine import Engine

from closedloop.contracts import TuningError
from closedloop.metadata import ProcessLock


@contextlib.contextmanager
def hold_run(engine: Engine, run: str) -> Iterator[None]:
    """Hold ``run`` for this process until the block ends; TuningError if another process does."""
    lock = ProcessLock.try_take(engine, f"tuning.{run}")
    if lock is None:
        raise TuningError(
            f"The tuning run {run} is being run by another process.",
            field="use_case",
            value=run,
            expected="one `closedloop tune start` per use case and mode",
            hint="Let it finish, or `closedloop tune stop` it; a killed tuner releases the run at once.",
        )
    try:
        yield
    finally:
        lock.release()
