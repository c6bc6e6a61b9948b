"""Probes of every component Tollgate depends on, read when /metrics is scraped: the
database pool, Redis, the usage writer and its journal, the ingestion jobs. Nothing of this
runs on the request path."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Gauge
from redis.asyncio import Redis
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.db.tables import Document
from api.usage.writer import UsageWriter

PROBE_TIMEOUT_SECONDS = 2.0


class ComponentGauges:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.db_pool = Gauge("tollgate_db_pool_connections", "Database connections of this process", ["state"], registry=r)
        self.db_up = Gauge("tollgate_db_up", "1 if the database answered the scrape's probe", registry=r)
        self.db_probe = Gauge("tollgate_db_probe_seconds", "Round trip of the scrape's database probe", registry=r)
        self.usage_queue = Gauge("tollgate_usage_queue_depth", "Usage records waiting to be written", registry=r)
        self.usage_written = Gauge("tollgate_usage_records_written", "Usage records this process has written", registry=r)
        self.documents = Gauge("tollgate_documents", "Documents by ingestion status (all processes)", ["status"], registry=r)
        self._registry = r
        self._redis: tuple[Gauge, Gauge, Gauge] | None = None

    def redis(self) -> tuple[Gauge, Gauge, Gauge]:
        """Up, probe time, connections: made on first use, so a deployment without Redis shows
        no Redis at all rather than a Redis that is down."""
        if self._redis is None:
            r = self._registry
            self._redis = (
                Gauge("tollgate_redis_up", "1 if Redis answered the scrape's PING", registry=r),
                Gauge("tollgate_redis_probe_seconds", "Round trip of the scrape's Redis PING", registry=r),
                Gauge("tollgate_redis_connections", "Redis connections of this process", ["state"], registry=r),
            )
        return self._redis


class DatabaseProbe:
    """The scrape's database query: the documents by status. One slower than
    `PROBE_TIMEOUT_SECONDS` reports the database down without being cancelled (cancelled in the
    middle of a call, an SQLite connection is invalidated and its close can wait forever: see
    `api.runtime.background`); a scrape while it runs waits on it rather than adding another."""

    def __init__(self, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self._session_factory = session_factory
        self._running: asyncio.Task[dict[str, int]] | None = None

    async def document_counts(self) -> dict[str, int] | None:
        """None when the database did not answer in time, or failed."""
        task = self._running
        if task is None:
            task = self._running = asyncio.create_task(self._count(), name="database-probe")
            task.add_done_callback(self._finished)
        done, _ = await asyncio.wait({task}, timeout=PROBE_TIMEOUT_SECONDS)
        if not done or task.cancelled() or task.exception() is not None:
            return None
        return task.result()

    def _finished(self, task: asyncio.Task[dict[str, int]]) -> None:
        if self._running is task:
            self._running = None
        if not task.cancelled():
            task.exception()  # a failure is the probe's answer (down), not an unread error

    async def _count(self) -> dict[str, int]:
        async with self._session_factory() as session:
            rows = (await session.execute(select(Document.status, func.count()).group_by(Document.status))).all()
        return {status: count for status, count in rows}


@dataclass(frozen=True)
class Components:
    engine: AsyncEngine
    database: DatabaseProbe
    redis: Redis | None
    usage_writer: UsageWriter


async def refresh(gauges: ComponentGauges, components: Components) -> None:
    gauges.usage_queue.set(components.usage_writer.pending)
    gauges.usage_written.set(components.usage_writer.written)
    pool = components.engine.pool
    if hasattr(pool, "checkedout"):  # a QueuePool (PostgreSQL); SQLite's pool keeps no counts
        gauges.db_pool.labels("in_use").set(pool.checkedout())
        gauges.db_pool.labels("idle").set(pool.checkedin())
    await asyncio.gather(_probe_database(gauges, components), _probe_redis(gauges, components.redis))


async def _probe_database(gauges: ComponentGauges, components: Components) -> None:
    started = time.perf_counter()
    found = await components.database.document_counts()
    if found is None:  # a scrape reports the database down; it never fails for it
        gauges.db_up.set(0)
        return
    gauges.db_up.set(1)
    gauges.db_probe.set(time.perf_counter() - started)
    for status in ("processing", "ready", "failed", *found):
        gauges.documents.labels(status).set(found.get(status, 0))


async def _probe_redis(gauges: ComponentGauges, redis: Redis | None) -> None:
    if redis is None:
        return
    up, probe, connections = gauges.redis()
    pool = redis.connection_pool
    connections.labels("in_use").set(len(getattr(pool, "_in_use_connections", ())))
    connections.labels("idle").set(len(getattr(pool, "_available_connections", ())))
    started = time.perf_counter()
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_SECONDS):
            await redis.ping()
    except Exception:  # noqa: BLE001  (a scrape reports Redis down; it never fails for it)
        up.set(0)
        return
    up.set(1)
    probe.set(time.perf_counter() - started)
