"""Handing memory a report has freed back to the operating system.

glibc keeps freed blocks for reuse rather than returning them: after a long log is read, the heap
holds the freed record buffers and column chunks between blocks that stay alive, and the
process's resident memory stays at the read's high-water mark for the rest of the report, and of
the console that made it (bench/experiment_report.py, per step). ``malloc_trim`` gives the free
pages back. Where the C library is not glibc (macOS, musl) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Any


def _glibc_trim() -> Any:
    name = ctypes.util.find_library("c")
    try:
        library = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return getattr(library, "malloc_trim", None)


_TRIM = _glibc_trim()


def return_freed_memory() -> None:
    """Return the process's free heap pages to the operating system (glibc only)."""
    if _TRIM is not None:
        _TRIM(0)
