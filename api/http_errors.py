"""The one place where domain errors become HTTP responses, and where no error escapes as a bare 500."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.errors import (
    AuthenticationError,
    ConflictError,
    DomainError,
    InsufficientBudgetError,
    InvalidRequestError,
    NotFoundError,
    PermissionDeniedError,
    TooManyRequestsError,
)

logger = logging.getLogger("tollgate.errors")

STATUS_BY_ERROR: dict[type[DomainError], int] = {
    InvalidRequestError: 400,
    AuthenticationError: 401,
    InsufficientBudgetError: 402,
    PermissionDeniedError: 403,
    NotFoundError: 404,
    ConflictError: 409,
    TooManyRequestsError: 429,
}

_SECRET_FIELDS = ("password", "current_password", "key", "token")


def _status_for(error: DomainError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 400


async def _domain_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, DomainError)
    headers: dict[str, str] = {}
    if isinstance(error, TooManyRequestsError):
        headers["Retry-After"] = str(error.retry_after)
    if isinstance(error, AuthenticationError):
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse({"detail": error.detail}, status_code=_status_for(error), headers=headers)


def _without_secrets(error: dict[str, Any]) -> dict[str, Any]:
    # Validation errors echo the input back; a rejected password must not be echoed.
    if any(str(part) in _SECRET_FIELDS for part in error.get("loc", ())):
        error = {k: v for k, v in error.items() if k != "input"}
    if isinstance(error.get("input"), (bytes, bytearray)):
        error = {**error, "input": None}
    return error


async def _validation_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    details = [_without_secrets(dict(e)) for e in error.errors()]
    return JSONResponse({"detail": jsonable_encoder(details)}, status_code=422)


async def _http_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    return JSONResponse({"detail": error.detail}, status_code=error.status_code, headers=error.headers)


async def _unexpected_error(request: Request, error: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return JSONResponse({"detail": "Internal server error"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected_error)
