"""Typed domain errors. Services raise these; `api.http.error_handlers` maps them to HTTP in one place."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidRequestError(DomainError):
    """The request is well-formed but cannot be honoured as asked (400)."""


class AuthenticationError(DomainError):
    """No valid credentials: missing, unknown, expired or revoked key, or a failed login (401)."""


class InsufficientBudgetError(DomainError):
    """The user's budget cannot cover the request (402)."""


class PermissionDeniedError(DomainError):
    """Authenticated, but not allowed to do this (403)."""


class NotFoundError(DomainError):
    """The resource does not exist, or is not the caller's to see (404)."""


class ConflictError(DomainError):
    """The change clashes with existing data: a duplicate, or a resource still in use (409)."""


class PayloadTooLargeError(DomainError):
    """An upload over the configured size (413)."""


class UnsupportedMediaTypeError(DomainError):
    """A file of a type that cannot be read (415)."""


class TooManyRequestsError(DomainError):
    """A throttle or limit is reached; retry after `retry_after` seconds (429)."""

    def __init__(self, detail: str, retry_after: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.retry_after = max(1, retry_after)
        self.headers = headers or {}


class ServiceUnavailableError(DomainError):
    """The request cannot be served now: no provider can take it (all at capacity or cooling
    down), or a dependency is down (503)."""

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = max(1, retry_after)


class DependencyUnavailableError(ServiceUnavailableError):
    """A service Tollgate depends on (Redis, the database) cannot be reached now (503).

    Raised where the shared state or the database is used, so a request that cannot be
    checked against its limits, budget or key is refused, never let through unchecked."""


class UpstreamError(DomainError):
    """Every provider tried failed: unreachable, 5xx, or an answer that is not valid (502)."""


class UpstreamRejectedError(DomainError):
    """The provider refused the request itself (a 4xx but 429): the client gets its status
    and its body as they are."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"upstream answered {status}")
        self.status = status
        self.body = body


class StreamFault(DomainError):
    """A stream already under way cannot be relayed any further (502, or 504 for one too
    slow): its headers are gone, so it ends with an error event of that code."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status


class UpstreamTimeoutError(DomainError):
    """The provider did not answer within its timeout (504)."""


STATUS_BY_ERROR: dict[type[DomainError], int] = {
    InvalidRequestError: 400,
    AuthenticationError: 401,
    InsufficientBudgetError: 402,
    PermissionDeniedError: 403,
    NotFoundError: 404,
    ConflictError: 409,
    PayloadTooLargeError: 413,
    UnsupportedMediaTypeError: 415,
    TooManyRequestsError: 429,
    UpstreamError: 502,
    ServiceUnavailableError: 503,
    UpstreamTimeoutError: 504,
}


def status_for(error: DomainError) -> int:
    """The HTTP status of a domain error (also what usage records store for failed calls)."""
    if isinstance(error, (UpstreamRejectedError, StreamFault)):
        return error.status
    for cls in type(error).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 400
