"""`tollgate worker`: document ingestion in a process of its own.

API processes can leave ingestion to workers (`settings.rag.ingestion_concurrency: 0` in their
config) so a large upload never competes with model calls for their CPU. Jobs are claimed
from the database, so any number of workers and API processes can share them; a worker that
dies leaves its job to be taken over when its lease expires.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import AsyncExitStack

from api.context import build_context
from api.settings import Settings

log = logging.getLogger("tollgate.worker")


async def run_worker(settings: Settings, concurrency: int) -> None:
    """Ingest documents, `concurrency` at a time, until SIGINT or SIGTERM; then finish cleanly
    (usage of the calls made is written before exiting)."""
    rag = settings.settings.rag.model_copy(update={"ingestion_concurrency": concurrency})
    settings = settings.model_copy(update={"settings": settings.settings.model_copy(update={"rag": rag})})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with AsyncExitStack() as stack:
        await build_context(settings, stack)  # starts the ingestion loop, and stops it on exit
        log.info("worker started: ingesting up to %d documents at once", concurrency)
        await stop.wait()
        log.info("worker stopping")
