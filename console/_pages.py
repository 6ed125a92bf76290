"""The console's pages, rendered on the server with Jinja2 from templates shipped in the wheel
(no CDN, no JavaScript framework): the numbers come from `_data`, the same as the JSON API."""

from __future__ import annotations

from importlib import resources
from typing import Any
from urllib.parse import parse_qs

import yaml
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from closedloop.access import Gatekeeper, principal_of
from closedloop.contracts import (
    ClosedLoopConfig,
    ClosedLoopError,
    InvalidRequestError,
    UnknownUseCaseError,
    public_use_cases,
)
from closedloop.registry import ModelRegistry

from ._data import model_listing, training_overview, tuning_report_page, tuning_runs, version_summary

COOKIE = "closedloop_key"
NAV = [
    ("/", "use cases"),
    ("/training", "training"),
    ("/traffic", "traffic"),
    ("/v1/experiments", "experiments"),
    ("/tuning", "tuning"),
]
_TEMPLATES = Environment(
    loader=PackageLoader("closedloop.console", "templates"), autoescape=select_autoescape()
)


def page_router(
    config: ClosedLoopConfig, registry: ModelRegistry, gate: Gatekeeper, *, database_schema: str | None
) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    database = config.infrastructure.resolved_database_url

    def render(request: Request, template: str, title: str, **values: Any) -> HTMLResponse:
        key = principal_of(request.scope)
        who = f"key {key.key_id} ({key.name})" if key else "no keys required"
        page = _TEMPLATES.get_template(template).render(
            title=title, nav=NAV, here=request.url.path, who=who, **values
        )
        return HTMLResponse(page)

    @router.get("/static/console.css")
    def stylesheet() -> Response:
        css = resources.files(__package__).joinpath("static/console.css").read_text(encoding="utf-8")
        return Response(css, media_type="text/css")

    @router.get("/favicon.ico")
    def favicon() -> Response:
        return Response(status_code=204)  # none: and no 404 in the browser's console either

    @router.get("/")
    def index(request: Request) -> HTMLResponse:
        listing = model_listing(config, registry)["use_cases"]
        training = training_overview(database, schema=database_schema)
        rows = []
        for name, outcomes in listing.items():
            buckets = training["traffic"].get(name, [])
            decisions = sum(b["decisions"] for b in buckets)
            rate = (
                sum(b["decisions"] * b["feedback_rate"] for b in buckets) / decisions if decisions else None
            )
            for outcome, entry in outcomes.items():
                rows.append(
                    {
                        "use_case": name,
                        "decision": config.use_cases[name].decision,
                        "outcome": outcome,
                        "champion": entry["champion"],
                        "pinned": entry["pinned"],
                        "versions": len(entry["versions"]),
                        "decisions": decisions,
                        "feedback_rate": "" if rate is None else f"{rate:.1%}",
                    }
                )
        return render(request, "index.html", "Use cases", rows=rows, training=training)

    @router.get("/use-cases/{name}")
    def use_case(name: str, request: Request) -> HTMLResponse:
        if name not in config.use_cases:
            raise UnknownUseCaseError(
                f"Unknown use case {name!r}.",
                field="name",
                value=name,
                expected=f"one of {sorted(config.use_cases)}",
            )
        listing = model_listing(config, registry, name)["use_cases"][name]
        models = {outcome: _outcome_view(entry) for outcome, entry in listing.items()}
        declaration = yaml.safe_dump(public_use_cases(config, [name])[name], sort_keys=False)
        key = principal_of(request.scope)
        admin = key is None or key.allows("admin")
        return render(
            request,
            "use_case.html",
            f"Use case {name}",
            use_case=name,
            declaration=declaration,
            models=models,
            admin=admin,
        )

    @router.get("/training")
    def training(request: Request) -> HTMLResponse:
        return render(
            request, "training.html", "Training", training=training_overview(database, schema=database_schema)
        )

    @router.get("/tuning")
    def tuning(request: Request) -> HTMLResponse:
        return render(
            request, "tuning.html", "Tuning runs", tuning=tuning_runs(database, schema=database_schema)
        )

    @router.get("/tuning/{run}")
    def tuning_run(run: str) -> HTMLResponse:
        page = tuning_report_page(config, run, schema=database_schema)
        if page is None:
            raise InvalidRequestError(
                f"No tuning run {run!r}.", field="run", value=run, expected="a run listed on /tuning"
            )
        return HTMLResponse(page)

    @router.get("/traffic")
    def traffic(request: Request) -> HTMLResponse:
        overview = training_overview(database, schema=database_schema)
        plots = {name: _traffic_plot(buckets) for name, buckets in overview["traffic"].items()}
        return render(request, "traffic.html", "Traffic", traffic=overview["traffic"], plots=plots)

    @router.get("/login")
    def login_page(request: Request, next: str = "/") -> HTMLResponse:
        return render(request, "login.html", "Sign in", next=_local(next), failed=None)

    @router.post("/login")
    async def login(request: Request) -> Response:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        key, target = form.get("key", [""])[0].strip(), _local(form.get("next", ["/"])[0])
        try:
            gate.authenticate(f"Bearer {key}")
        except ClosedLoopError as exc:
            return render(request, "login.html", "Sign in", next=target, failed=exc.message)
        answer = RedirectResponse(target, status_code=303)
        # HttpOnly: no script reads it; SameSite=Strict: no other site's form posts with it.
        answer.set_cookie(COOKIE, key, httponly=True, samesite="strict", secure=request.url.scheme == "https")
        return answer

    return router


def _local(target: str) -> str:
    """Only paths of this console (no open redirect to another site)."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


def _outcome_view(entry: dict[str, Any]) -> dict[str, Any]:
    versions = [version_summary(v, entry["champion"], entry["pinned"]) for v in entry["versions"]]
    champion = next((v for v in entry["versions"] if v["version"] == entry["champion"]), None)
    importance: list[tuple[str, float]] = []
    if champion is not None:
        gains = champion["metadata"].get("gain_importance") or {}
        total = sum(float(g) for g in gains.values()) or 1.0
        importance = sorted(((n, float(g) / total) for n, g in gains.items()), key=lambda p: -p[1])[:10]
    return {**entry, "versions": versions, "importance": importance}


def _traffic_plot(buckets: list[dict[str, Any]]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from closedloop.evaluation import inline_png

    figure, left = plt.subplots(figsize=(8, 2.6))
    minutes = list(range(len(buckets)))
    left.bar(minutes, [b["decisions"] for b in buckets], color="#4d7cc7", label="decisions / minute")
    left.set_ylabel("decisions / minute")
    right = left.twinx()
    right.plot(
        minutes, [100 * (b["feedback_rate"] or 0) for b in buckets], color="#c7584d", label="feedback %"
    )
    right.set_ylabel("with feedback (%)")
    left.set_xlabel("minute (oldest left)")
    picture = inline_png(figure)
    plt.close(figure)
    return picture
