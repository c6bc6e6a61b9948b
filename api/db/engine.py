"""Async engine and session factory, built by the app's lifespan (never at import time)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from api.errors import DependencyUnavailableError
from api.settings import DatabaseSettings

# A server that does not answer (a host down, a dropped route) must not hold an
# authentication or a usage write for asyncpg's default minute to connect, nor forever on a
# connection that went quiet. No statement of an HTTP request should last longer than a
# proxy waits for its answer (nginx: 60 s) anyway.
CONNECT_TIMEOUT_SECONDS = 5.0
STATEMENT_TIMEOUT_SECONDS = 60.0

# SQLSTATE classes of a connection lost or refused, a server shutting down, starting up or
# out of resources: the database is unavailable, the statement itself is fine.
_UNAVAILABLE_SQLSTATES = ("08", "57P", "53")

# A PostgreSQL restart takes seconds: what 503 answers ask clients to wait.
RETRY_AFTER_SECONDS = 5


def ensure_sqlite_directory(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside the single writer; foreign keys are off by default in SQLite.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
    # Let SQLAlchemy's "begin" event issue BEGIN IMMEDIATE instead of the driver's own BEGIN.
    dbapi_connection.isolation_level = None


def build_engine(database: DatabaseSettings) -> AsyncEngine:
    ensure_sqlite_directory(database.url)
    # hide_parameters: a failed statement's values (password hashes, emails) stay out of logs.
    # pool_pre_ping: after a database restart every pooled connection is dead; the ping on
    # checkout finds it and reconnects, so the pool recovers by itself, with no failed query.
    kwargs: dict[str, Any] = {"pool_pre_ping": True, "hide_parameters": True}
    if database.echo:
        # Not `echo=True`: that gives SQLAlchemy's logger a handler of its own, printing plain
        # text to stdout in the middle of the JSON log. At INFO, its statements reach the
        # handlers the logging is configured with (api/logs.py), like every other line.
        logging.getLogger("sqlalchemy.engine.Engine").setLevel(logging.INFO)
    if database.url.startswith("postgresql"):
        kwargs.update(
            pool_size=database.pool_size,
            max_overflow=database.pool_size,
            # Day boundaries in usage reports are UTC whatever the server's zone.
            connect_args={
                "server_settings": {"timezone": "UTC"},
                "timeout": CONNECT_TIMEOUT_SECONDS,
                "command_timeout": STATEMENT_TIMEOUT_SECONDS,
            },
        )
    engine = create_async_engine(database.url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        event.listen(engine.sync_engine, "begin", _sqlite_begin_immediate)
    return engine


def _sqlite_begin_immediate(connection: Any) -> None:
    # SQLite's default deferred transactions deadlock when two connections read then write
    # ("database is locked" at once, busy_timeout or not). Taking the write lock at BEGIN makes
    # them queue behind busy_timeout instead.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def database_unavailable(error: BaseException) -> bool:
    """Whether `error` says the database cannot be reached now (down, restarting, the
    connection lost), rather than that a statement or its data is wrong: worth a 503 and a
    retry, not a 500."""
    if isinstance(error, DBAPIError):
        if error.connection_invalidated or isinstance(error, (OperationalError, InterfaceError)):
            return True
        error = error.orig if error.orig is not None else error
    if isinstance(error, (PoolTimeoutError, OSError, TimeoutError)):
        # asyncpg raises a refused or timed-out connect as it is, not wrapped by SQLAlchemy.
        return True
    sqlstate = getattr(error, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate.startswith(_UNAVAILABLE_SQLSTATES)


def database_unavailable_error(detail: str) -> DependencyUnavailableError:
    return DependencyUnavailableError(f"The database is unavailable: {detail}; retry shortly", RETRY_AFTER_SECONDS)


def build_session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
