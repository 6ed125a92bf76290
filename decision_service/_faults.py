"""Crash points: where a fault test kills (or stalls) the engine's process, one step at a time.

``CLOSEDLOOP_CRASH_AT=decide.logged`` (say) makes the process kill itself with SIGKILL when it
reaches that step, as a power cut or an OOM kill would; tests/test_crash_recovery.py restarts it
and checks that nothing acknowledged was lost or counted twice. Unset, a crash point costs one
comparison with None. ``CLOSEDLOOP_PAUSE_AT=decide.logged=1.5`` stalls the process there for
that many seconds instead, as a GC pause or an overloaded host would: the client gives up waiting
for an answer that the service then logs (tests/test_activation.py).
"""

from __future__ import annotations

import os
import signal
import time

STEPS = (
    "decide.checked",  # the request is checked and decided, nothing written yet
    "decide.logged",  # the decision event is in the log, the index not yet told
    "decide.indexed",  # the index knows the decision, the answer not yet sent
    "feedback.checked",  # the reports are checked against the index, nothing written yet
    "feedback.logged",  # the feedback events are in the log, not yet claimed in the index
    "feedback.claimed",  # claimed in the index, the answer not yet sent
)

_CRASH_AT = os.environ.get("CLOSEDLOOP_CRASH_AT") or None
_PAUSE_AT, _, _PAUSE_SECONDS = (os.environ.get("CLOSEDLOOP_PAUSE_AT") or "").partition("=")


def crash_point(step: str) -> None:
    if _CRASH_AT is not None and step == _CRASH_AT:
        os.kill(os.getpid(), signal.SIGKILL)
    if _PAUSE_AT and step == _PAUSE_AT:
        time.sleep(float(_PAUSE_SECONDS or 1.0))
