"""Experiment reports over HTTP: a router the console mounts (``closedloop console``), never the
decision service, so that analysing (seconds of CPU over a whole phase's logs) cannot slow a
decision down.

A report is cached for ``cache_seconds``, computed in FastAPI's thread pool, and computed once
however many ask at the same time (``fresh=true`` included): the callers of one report wait for
the same computation instead of each starting one.
"""

from __future__ import annotations

import html
import json
import threading
import time
from collections.abc import Callable
from typing import Literal

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, Response

from closedloop.contracts import ClosedLoopConfig
from closedloop.registry import ModelRegistry, open_registry

from ._analysis import analyze_experiment, experiment_listing
from ._html import html_page, render_html, report_csv
from ._report_model import ExperimentReport


class _ReportCache:
    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._reports: dict[str, tuple[float, ExperimentReport]] = {}
        self._lock = threading.Lock()
        self._computing: dict[str, threading.Lock] = {}

    def report(
        self, name: str, compute: Callable[[], ExperimentReport], *, fresh: bool = False
    ) -> ExperimentReport:
        """The cached report, or one computed now; ``fresh``: one computed after this call began
        (a computation under way when it was asked does not count)."""
        asked = time.monotonic()
        with self._lock:
            computing = self._computing.setdefault(name, threading.Lock())
        with computing:  # one computation per report at a time; the others wait for its result
            with self._lock:
                cached = self._reports.get(name)
            if cached is not None and (
                cached[0] >= asked or (not fresh and asked - cached[0] < self._seconds)
            ):
                return cached[1]
            started = time.monotonic()
            report = compute()
            with self._lock:
                self._reports[name] = (started, report)
            return report


def report_router(
    config: ClosedLoopConfig, registry: ModelRegistry | None = None, *, cache_seconds: float = 60.0
) -> APIRouter:
    """The report endpoints; ``registry`` defaults to the one the configuration names."""
    registry = registry or open_registry(config.infrastructure)
    router = APIRouter(tags=["experiments"])
    cache = _ReportCache(cache_seconds)

    @router.get("/v1/experiments", response_model=None)
    def experiments(format: Literal["html", "json"] = "html") -> Response:
        """Every declared experiment with its phases; an HTML page linking to the reports."""
        listing = experiment_listing(config, registry)
        if format == "json":
            return Response(json.dumps(listing), media_type="application/json")
        rows = "".join(
            f"<tr><td><a href='/v1/experiments/{html.escape(name)}/report'>{html.escape(name)}</a></td>"
            f"<td>{html.escape(entry['use_case'])}</td><td>{len(entry['phases'])}</td>"
            f"<td>{_status(entry['phases'])}</td>"
            f"<td><a href='/v1/experiments/{html.escape(name)}/report?format=csv'>CSV</a> "
            f"<a href='/v1/experiments/{html.escape(name)}/report?format=json'>JSON</a></td></tr>"
            for name, entry in listing.items()
        )
        table = (
            "<h1>Experiments</h1><p><a href='/'>&larr; the console</a></p><table><tr><th>experiment</th>"
            f"<th>use case</th><th>phases</th><th>status</th><th>data</th></tr>{rows}</table>"
        )
        return HTMLResponse(html_page("Experiments", [table]))

    @router.get("/v1/experiments/{name}/report", response_model=None)
    def experiment_report(
        name: str,
        format: Literal["html", "json", "csv"] = "html",
        fresh: bool = Query(False, description="Recompute instead of using a report under a minute old."),
    ) -> Response:
        """The experiment's latest phase analysed from the logs, as the HTML report or its JSON."""
        report = cache.report(name, lambda: analyze_experiment(config, name, registry=registry), fresh=fresh)
        if format == "json":
            return Response(report.model_dump_json(), media_type="application/json")
        if format == "csv":
            disposition = f'attachment; filename="{name}-phase{report.phase}.csv"'
            return Response(
                report_csv(report), media_type="text/csv", headers={"content-disposition": disposition}
            )
        return HTMLResponse(render_html(report))

    return router


def _status(phases: list[dict[str, object]]) -> str:
    if not phases:
        return "not started"
    return "running" if phases[-1].get("stopped_at") is None else "stopped"
