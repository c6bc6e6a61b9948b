"""`tollgate worker`: document ingestion, and the usage journals of dead API processes, in a
process of its own.

API processes can leave ingestion to workers (`settings.rag.ingestion_concurrency: 0` in their
config) so a large upload never competes with model calls for their CPU. Jobs are claimed
from the database, so any number of workers and API processes can share them; a worker that
dies leaves its job to be taken over when its lease expires.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
from contextlib import AsyncExitStack
from pathlib import Path

from api.runtime import every, open_call_path, open_rag, open_stores
from api.usage.journal import replay_round
from api.settings import Settings

log = logging.getLogger("tollgate.worker")


# How soon the records of an API process that died reach the database.
REPLAY_EVERY_SECONDS = 2.0


async def run_worker(settings: Settings, concurrency: int) -> None:
    """Ingest documents, `concurrency` at a time, and write the usage journals that dead API
    processes left in `settings.usage_journal_path`, until SIGINT or SIGTERM; then finish
    cleanly (usage of the calls made is written before exiting)."""
    if settings.settings.rag.vector_store_model is None:
        concurrency = 0
    rag = settings.settings.rag.model_copy(update={"ingestion_concurrency": concurrency})
    settings = settings.model_copy(update={"settings": settings.settings.model_copy(update={"rag": rag})})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with AsyncExitStack() as stack:
        stores = await open_stores(settings, stack)
        calls = await open_call_path(settings, stores, stack)
        open_rag(settings, stores, calls, stack, ingest=True)  # the ingestion loop, stopped on exit
        journals = settings.settings.usage_journal_path
        if journals is not None:
            # Stopped before the usage writer drains.
            every(stack, "journal-replay", functools.partial(replay_round, Path(journals), calls.usage_writer.write_now),
                  REPLAY_EVERY_SECONDS, first_after=0)
        log.info("worker started: ingesting up to %d documents at once; usage journals: %s", concurrency, journals or "off")
        await stop.wait()
        log.info("worker stopping")
