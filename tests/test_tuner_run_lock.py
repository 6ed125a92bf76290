"""One tuner process per run, on SQLite and PostgreSQL: a second holder is refused with a clear
error, a released run can be taken, and a holder killed with SIGKILL releases the run at once."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
from conftest import Database

from closedloop.contracts import TuningError
from closedloop.tuner import TuningStore

RUN = "offer.online"


def test_a_second_holder_is_refused_until_the_first_lets_go(database: Database) -> None:
    first = TuningStore.from_url(database.url, schema=database.schema)
    second = TuningStore.from_url(database.url, schema=database.schema)
    try:
        with first.exclusive(RUN):
            refused = pytest.raises(TuningError, match=r"offer\.online is being run by another process")
            with refused, second.exclusive(RUN):
                pass
            with second.exclusive("offer.offline"):  # another run is not held
                pass
        with second.exclusive(RUN):
            pass
    finally:
        first.close()
        second.close()


HOLDER = textwrap.dedent(
    """
    import sys, time
    from closedloop.tuner import TuningStore
    store = TuningStore.from_url(sys.argv[1], schema=sys.argv[2] or None)
    with store.exclusive("offer.online"):
        print("held", flush=True)
        time.sleep(600)
    """
)


def test_a_killed_holder_releases_the_run(database: Database) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, database.url, database.schema or ""],
        stdout=subprocess.PIPE,
        text=True,
    )
    store = TuningStore.from_url(database.url, schema=database.schema)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(TuningError), store.exclusive(RUN):
            pass
        holder.kill()  # SIGKILL: no cleanup of any kind
        holder.wait(timeout=10)
        deadline = time.monotonic() + 10
        while True:  # PostgreSQL ends the dead client's session as soon as it sees the socket close
            try:
                with store.exclusive(RUN):
                    break
            except TuningError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        holder.kill()
        holder.wait(timeout=10)
        if holder.stdout is not None:
            holder.stdout.close()
        store.close()
