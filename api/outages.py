"""The one place where a failure of the database or Redis that says it cannot be reached now
becomes the domain error the client gets (503 with Retry-After), rather than a bug (500).

Used by the HTTP layer for errors no domain code turned into a domain error, and by the call
pipeline (`api.calls.pipeline`), so that the usage record of such a call has the status its
client saw.
"""

from __future__ import annotations

import asyncpg
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError

from api.db.engine import database_unavailable, database_unavailable_error
from api.errors import DependencyUnavailableError
from api.state.redis_client import REDIS_DOWN, redis_unavailable

# What a dependency raises: SQLAlchemy, Redis, asyncpg, and the socket layer as it is (asyncpg's
# connect raises a refused or timed-out connection unwrapped).
DEPENDENCY_ERRORS: tuple[type[Exception], ...] = (SQLAlchemyError, RedisError, asyncpg.PostgresError, ConnectionError, TimeoutError)


def unavailable_error(error: BaseException) -> DependencyUnavailableError | None:
    """The 503 for `error` if it says a dependency is unavailable; None for any other error."""
    if isinstance(error, RedisError):
        return redis_unavailable() if isinstance(error, REDIS_DOWN) else None
    if isinstance(error, (SQLAlchemyError, asyncpg.PostgresError)):
        return database_unavailable_error("the request cannot be served") if database_unavailable(error) else None
    if isinstance(error, (ConnectionError, TimeoutError)):
        return DependencyUnavailableError("A service Tollgate depends on is unavailable; retry shortly", 5)
    return None
