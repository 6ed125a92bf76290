"""Experiment reports over HTTP: a router the decision service mounts (``closedloop serve`` does).

Analysing reads the whole phase from the logs, so a report is cached for ``cache_seconds`` and
computed in FastAPI's thread pool, never on the event loop that answers decisions.
"""

from __future__ import annotations

import html
import json
import threading
import time
from typing import Literal

from fastapi import APIRouter, Query
from fastapi.responses import HTMLResponse, Response

from closedloop.contracts import ClosedLoopConfig
from closedloop.registry import ModelRegistry, open_registry

from ._analysis import analyze_experiment, experiment_listing
from ._html import render_html
from ._report_model import ExperimentReport


class _ReportCache:
    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._reports: dict[str, tuple[float, ExperimentReport]] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> ExperimentReport | None:
        with self._lock:
            cached = self._reports.get(name)
        if cached and time.monotonic() - cached[0] < self._seconds:
            return cached[1]
        return None

    def put(self, name: str, report: ExperimentReport) -> None:
        with self._lock:
            self._reports[name] = (time.monotonic(), report)


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
            f"<td>{_status(entry['phases'])}</td></tr>"
            for name, entry in listing.items()
        )
        return HTMLResponse(
            "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>Experiments</title></head>"
            "<body><h1>Experiments</h1><table><tr><th>experiment</th><th>use case</th><th>phases</th>"
            f"<th>status</th></tr>{rows}</table></body></html>"
        )

    @router.get("/v1/experiments/{name}/report", response_model=None)
    def experiment_report(
        name: str,
        format: Literal["html", "json"] = "html",
        fresh: bool = Query(False, description="Recompute instead of using a report under a minute old."),
    ) -> Response:
        """The experiment's latest phase analysed from the logs, as the HTML report or its JSON."""
        report = None if fresh else cache.get(name)
        if report is None:
            report = analyze_experiment(config, name, registry=registry)
            cache.put(name, report)
        if format == "json":
            return Response(report.model_dump_json(), media_type="application/json")
        return HTMLResponse(render_html(report))

    return router


def _status(phases: list[dict[str, object]]) -> str:
    if not phases:
        return "not started"
    return "running" if phases[-1].get("stopped_at") is None else "stopped"
