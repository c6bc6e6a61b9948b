"""The API reference pages, `/docs` (Swagger UI) and `/redoc` (ReDoc); the console (`/`) links to them.

FastAPI's own pages load their JavaScript, CSS, fonts and favicon from CDNs: on a machine
without internet access (as many organisations run a gateway) they are blank. These pages
load everything from Tollgate itself: the assets ship in the `fastapi-standalone-docs`
package, installed with Tollgate (only its files are used: its helper patches FastAPI's
module-level functions, which would reach every app of the process). Their
Content-Security-Policy refuses anything from another host, so a future asset or a
library default that points outside fails loudly in the browser test, not silently offline.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

DOCS_PATH = "/docs"
REDOC_PATH = "/redoc"

# The package's layout: swagger/ (swagger-ui-bundle.js, swagger-ui.css), redoc/
# (redoc.standalone.js, and the logo its footer shows, which the package's build rewrote to
# load from `<page path>/logo-mini.svg`: hence redoc/ served under /redoc), fastapi/favicon.png.
_ASSETS = Path(str(files("fastapi_standalone_docs") / "static"))

# Inline <script> blocks without attributes: FastAPI's Swagger UI page starts the UI in one.
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)

# Swagger UI and ReDoc style their elements inline (React, styled-components), ReDoc searches
# in a worker it builds from a blob, and both draw icons as data: URLs; nothing else is allowed,
# and nothing at all from another host.
_POLICY = (
    "default-src 'none'; script-src 'self'{scripts}; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def content_security_policy(html: str) -> str:
    """The policy for one page: its own inline scripts allowed by their hash, no others."""
    hashes = "".join(
        f" 'sha256-{base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(html)
    )
    return _POLICY.format(scripts=hashes)


def _page(response: HTMLResponse) -> HTMLResponse:
    response.headers["Content-Security-Policy"] = content_security_policy(bytes(response.body).decode())
    return response


def add_api_reference(app: FastAPI) -> None:
    """`/docs`, `/redoc` and their assets. The app must be built with
    `docs_url=None, redoc_url=None` (FastAPI's CDN-loading pages)."""

    def root(request: Request) -> str:
        # Behind a proxy that serves Tollgate under a prefix, FastAPI's pages use it too.
        return request.scope.get("root_path", "").rstrip("/")

    # The pages read the app from the request: FastAPI keeps endpoints in a process-wide cache,
    # and one holding its app would keep every app a process built (each test builds several).
    async def swagger_ui(request: Request) -> HTMLResponse:
        prefix, app = root(request), request.app
        return _page(get_swagger_ui_html(
            openapi_url=prefix + (app.openapi_url or ""), title=f"{app.title} - API reference",
            swagger_js_url=f"{prefix}{DOCS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{prefix}{DOCS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{prefix}/favicon.png",
            # Swagger UI would send the schema to validator.swagger.io for its badge.
            swagger_ui_parameters={"validatorUrl": None},
        ))

    async def redoc(request: Request) -> HTMLResponse:
        prefix, app = root(request), request.app
        return _page(get_redoc_html(
            openapi_url=prefix + (app.openapi_url or ""), title=f"{app.title} - API reference (ReDoc)",
            redoc_js_url=f"{prefix}{REDOC_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{prefix}/favicon.png",
            with_google_fonts=False,
        ))

    async def favicon() -> FileResponse:
        return FileResponse(_ASSETS / "fastapi" / "favicon.png")

    app.add_api_route(DOCS_PATH, swagger_ui, methods=["GET"], include_in_schema=False)
    app.add_api_route(REDOC_PATH, redoc, methods=["GET"], include_in_schema=False)
    app.add_api_route("/favicon.png", favicon, methods=["GET"], include_in_schema=False)
    app.mount(DOCS_PATH, StaticFiles(directory=_ASSETS / "swagger"), name="swagger-ui-assets")
    app.mount(REDOC_PATH, StaticFiles(directory=_ASSETS / "redoc"), name="redoc-assets")
