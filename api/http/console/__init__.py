"""The console: Tollgate in the browser, for the people of an organisation (a playground, their
keys and usage) and for platform teams (the administration).

It is a client of Tollgate's public API and nothing else: static files (HTML, CSS and plain
JavaScript modules in `assets/`, no build step, nothing fetched from another host) that call
`/v1/...` with the key `/v1/auth/login` hands out. It can do nothing a key could not do with
curl. Why this shape: docs/console.md.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.responses import FileResponse, JSONResponse, Response

ASSETS = Path(__file__).parent / "assets"
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".html": "text/html; charset=utf-8",
          ".svg": "image/svg+xml"}

# Model answers and document text are untrusted: the console renders them as text nodes, and
# this policy lets the page run only its own scripts and reach only Tollgate, so even a
# rendering mistake could neither run a script nor send anything elsewhere.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; media-src 'self' blob:; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The assets change with Tollgate's version: the browser asks again, and gets a 304.
    "Cache-Control": "no-cache",
}


def _files() -> dict[str, Path]:
    return {path.name: path for path in ASSETS.iterdir() if path.suffix in _TYPES}


def add_console(app: FastAPI) -> None:
    files = _files()  # read once: a name outside this list is never looked up on disk

    async def console_page() -> Response:
        return FileResponse(files["index.html"], media_type=_TYPES[".html"], headers=_HEADERS)

    async def console_asset(name: str) -> Response:
        path = files.get(name)
        if path is None:
            return JSONResponse({"detail": f"No console asset named {name!r}"}, status_code=404)
        return FileResponse(path, media_type=_TYPES[path.suffix], headers=_HEADERS)

    app.add_api_route("/", console_page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/console/{name}", console_asset, methods=["GET"], include_in_schema=False)
