"""The one place where domain errors become HTTP responses, and where no error escapes as a bare 500."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.errors import (
    AuthenticationError,
    DomainError,
    ServiceUnavailableError,
    TooManyRequestsError,
    UpstreamRejectedError,
    status_for,
)
from api.outages import DEPENDENCY_ERRORS, unavailable_error

logger = logging.getLogger("tollgate.errors")

# Words of a field's name that say it carries a secret: `password`, `current_password`,
# `key` (a provider's key), `api_key`, `token`, `apiKey`, `x-api-key`... A name is split
# into words so `max_tokens` or `prompt_tokens` are not taken for secrets.
_SECRET_WORDS = frozenset({"password", "passwd", "passphrase", "key", "apikey", "token", "secret", "authorization",
                           "credential", "credentials"})
_WORD = re.compile(r"[a-z0-9]+")
_MAX_ECHOED_ITEMS = 1000
# The most values looked at for a secret field inside one echoed input; beyond, it is not echoed.
_MAX_INSPECTED = 10_000


async def _domain_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, DomainError)
    if isinstance(error, UpstreamRejectedError):
        # The provider refused the request itself: the client sees its status and body unchanged.
        return JSONResponse(error.body, status_code=error.status)
    headers: dict[str, str] = {}
    if isinstance(error, (TooManyRequestsError, ServiceUnavailableError)):
        headers["Retry-After"] = str(error.retry_after)
    if isinstance(error, TooManyRequestsError):
        headers.update(error.headers)
    if isinstance(error, AuthenticationError):
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse({"detail": error.detail}, status_code=status_for(error), headers=headers)


def error_status(error: Exception) -> tuple[int, Any, dict[str, str]]:
    """A domain error's status, detail and headers, as `_domain_error` answers them; for
    endpoints that speak another protocol's error shape (`/v1/messages`)."""
    if isinstance(error, UpstreamRejectedError):
        body = error.body
        message = body.get("error", {}).get("message") if isinstance(body, dict) and isinstance(body.get("error"), dict) else None
        return error.status, message if isinstance(message, str) else body, {}
    assert isinstance(error, DomainError)
    headers: dict[str, str] = {}
    if isinstance(error, (TooManyRequestsError, ServiceUnavailableError)):
        headers["Retry-After"] = str(error.retry_after)
    if isinstance(error, TooManyRequestsError):
        headers.update(error.headers)
    return status_for(error), error.detail, headers


def validation_details(error: RequestValidationError) -> Any:
    """A validation error's details, with no secret and nothing unencodable echoed back."""
    details = jsonable_encoder([_without_secrets(dict(e)) for e in error.errors()])
    if not _encodable(details):
        details = jsonable_encoder([{k: v for k, v in e.items() if k not in ("input", "ctx")} for e in error.errors()])
    return details


def _names_secret(name: object) -> bool:
    return isinstance(name, str) and any(word in _SECRET_WORDS for word in _WORD.findall(name.lower()))


def _holds_secret(value: Any) -> bool:
    """Whether `value` is, or contains, an object with a secret-bearing field. A loop, not
    recursion: the nesting is the client's choice."""
    pending, inspected = [value], 0
    while pending:
        item = pending.pop()
        inspected += 1
        if inspected > _MAX_INSPECTED:
            return True  # too big to be sure: not echoed
        if isinstance(item, dict):
            if any(_names_secret(key) for key in item):
                return True
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def _without_secrets(error: dict[str, Any]) -> dict[str, Any]:
    """A validation error echoes its input back. Not when that input is a secret: a field named
    like one (a wrong-typed provider key, an API key sent in a field that does not exist), or
    an object holding one (a `missing` field or a whole-body check echoes the whole body, its
    password or key with it). Nor a large input: 100,000 messages refused would go back as a
    3 MB error."""
    value = error.get("input")
    large = isinstance(value, (str, list, dict)) and len(value) > _MAX_ECHOED_ITEMS
    if large or any(_names_secret(part) for part in error.get("loc", ())) or _holds_secret(value):
        error = {k: v for k, v in error.items() if k != "input"}
    if isinstance(error.get("input"), (bytes, bytearray)):
        error = {**error, "input": None}
    return error


def _encodable(content: Any) -> bool:
    try:
        json.dumps(content, allow_nan=False, ensure_ascii=False).encode("utf-8")
        return True
    except (ValueError, UnicodeEncodeError):
        return False


async def _validation_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    # The rejected input itself may not be writable as JSON (NaN, lone surrogate): then omitted.
    return JSONResponse({"detail": validation_details(error)}, status_code=422)


async def _http_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    return JSONResponse({"detail": error.detail}, status_code=error.status_code, headers=error.headers)


async def _dependency_error(request: Request, error: Exception) -> JSONResponse:
    """A database or Redis failure that no domain code turned into a domain error (an
    administration route, a session dependency): a dependency that is down is a 503 with
    Retry-After like every other, never a 500. Any other failure of theirs is a bug: 500."""
    unavailable = unavailable_error(error)
    if unavailable is None:
        raise error  # to the 500 handler, as if this one did not exist
    logger.warning("%s %s: %s: %r", request.method, request.url.path, unavailable.detail, error)
    return await _domain_error(request, unavailable)


async def _unexpected_error(request: Request, error: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    # The error goes on to the server, which then closes the connection: say so, or a keep-alive
    # client sends its next request on a connection about to be reset.
    return JSONResponse({"detail": "Internal server error"}, status_code=500, headers={"Connection": "close"})


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # Raised by SQLAlchemy, or as they are by asyncpg and the socket layer (a refused connect).
    for dependency_error in DEPENDENCY_ERRORS:
        app.add_exception_handler(dependency_error, _dependency_error)
    app.add_exception_handler(Exception, _unexpected_error)
