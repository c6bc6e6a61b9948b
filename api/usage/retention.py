"""How long raw usage records are kept: `usage_retention_days`. Older records are deleted in
small batches (each its own short transaction, so writers and readers are never held up for
long); the daily roll-ups are kept, so reports over those days still add up."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from api.db.base import utcnow
from api.db.tables import Usage

logger = logging.getLogger("tollgate.usage")

BATCH = 5_000


async def purge_old_records(engine: AsyncEngine, retention_days: int, batch: int = BATCH) -> int:
    """Delete the records older than `retention_days`; how many. Every process may run it at
    once: each batch deletes what is still there."""
    cutoff = utcnow() - timedelta(days=retention_days)
    purged = 0
    while True:
        oldest = select(Usage.id).where(Usage.created < cutoff).order_by(Usage.created).limit(batch)
        async with engine.begin() as connection:
            deleted = (await connection.execute(delete(Usage).where(Usage.id.in_(oldest.scalar_subquery())))).rowcount
        purged += deleted
        if deleted < batch:
            return purged


async def purge_usage(engine: AsyncEngine, retention_days: int) -> None:
    """One round of the periodic purge: a database away now leaves the records to the next."""
    try:
        purged = await purge_old_records(engine, retention_days)
    except DBAPIError as error:
        logger.warning("purging old usage records failed: %r", error)
        return
    if purged:
        logger.info("purged %d usage records older than %d days (their daily roll-ups are kept)", purged, retention_days)
