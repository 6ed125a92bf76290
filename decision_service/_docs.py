"""The API's interactive description (Swagger UI) from assets shipped in a wheel
(``swagger-ui-bundle``), not from a CDN: FastAPI's default page is blank without internet."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, Response

DOCS_ASSETS = {
    "swagger-ui-bundle.js": "application/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}
DOCS_PATHS = frozenset({"/docs", *(f"/docs/assets/{name}" for name in DOCS_ASSETS)})
"""Open like the description itself: nothing in them is secret."""


def serve_bundled_docs(app: FastAPI) -> None:
    """``/docs`` on the bundled Swagger UI; none if the bundle is not installed (the OpenAPI
    description stays at ``/openapi.json``)."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:
        return
    folder = Path(swagger_ui_path)

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{app.title}: API",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon-32x32.png",
        )

    @app.get("/docs/assets/{name}", include_in_schema=False)
    def asset(name: str) -> Response:
        if name not in DOCS_ASSETS:
            return Response(status_code=404)
        return FileResponse(folder / name, media_type=DOCS_ASSETS[name])
