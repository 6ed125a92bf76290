"""Helper processes end with the process they serve: a report's decoding workers, their fork
server and the resource tracker, once the report's process is killed with SIGKILL (they waited
for work forever). The trainer's preparing worker: `tests/test_join_pipeline.py`."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import descendants

REPORT_PROCESS = """
import time
from closedloop.evaluation._log_batches import _warm


def main():
    _warm(2)  # what a report over a long log starts before it reads
    time.sleep(120)


if __name__ == "__main__":
    main()
"""


def test_a_killed_report_leaves_no_decoding_worker_behind() -> None:
    process = subprocess.Popen([sys.executable, "-c", REPORT_PROCESS])
    try:
        deadline = time.monotonic() + 60
        while len(helpers := descendants(process.pid)) < 4:  # fork server, tracker, 2 workers
            assert process.poll() is None, "the report process died on its own"
            assert time.monotonic() < deadline, f"the workers did not start: {helpers}"
            time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    deadline = time.monotonic() + 15
    while alive := [pid for pid in helpers if Path(f"/proc/{pid}").exists()]:
        assert time.monotonic() < deadline, f"processes of the killed report live on: {alive}"
        time.sleep(0.1)
