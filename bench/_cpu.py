"""CPU per request of server processes, read from /proc, measured side by side under the same load."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import httpx

JSON = {"content-type": "application/json"}


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (uvicorn's workers), all their threads
    (Linux: /proc/<pid>/stat)."""
    stats = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # gone meanwhile
                continue
            stats[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    family, ticks = {pid}, 0
    for process, (parent, used) in sorted(stats.items()):
        if process in family or parent in family:
            family.add(process)
            ticks += used
    return ticks / os.sysconf("SC_CLK_TCK")


def paired_cpu_per_decision(
    targets: list[tuple[str, int, dict[str, str]]], bodies: list[bytes], seconds: float
) -> list[float]:
    """CPU ms per decision of each (url, pid, headers) target, measured at the same time: each
    load thread sends its requests to the targets in turn, so both see the same load and the
    same noise from everything else on the machine."""
    for url, _, headers in targets:
        with httpx.Client(base_url=url, timeout=5, headers={**JSON, **headers}) as http:
            for body in bodies[:200]:  # warm up
                http.post("/v1/decide", content=body).raise_for_status()
    count = [0]
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        clients = [httpx.Client(base_url=url, timeout=5, headers={**JSON, **h}) for url, _, h in targets]
        done = 0
        while time.perf_counter() < deadline:
            for http in clients:
                http.post("/v1/decide", content=bodies[done % len(bodies)]).raise_for_status()
            done += 1
        for http in clients:
            http.close()
        with lock:
            count[0] += done

    before = [cpu_seconds(pid) for _, pid, _ in targets]
    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = [cpu_seconds(pid) for _, pid, _ in targets]
    return [(a - b) / count[0] * 1000 for a, b in zip(after, before, strict=True)]
