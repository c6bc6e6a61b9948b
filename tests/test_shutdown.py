"""Stopping a process never leaves work behind that would hold its exit.

Background loops (document ingestion, the catalog's and policies' refreshes, the identity
watcher, the usage writer) are told to stop and finish the database call they are in. Cancelled
in the middle of one, SQLite's connection is invalidated, and the close SQLAlchemy starts for
it can wait forever on the connection's stopped thread: a task that never ends and holds the
event loop's shutdown (seen in CI: `make test` hung in a test's teardown).
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import uuid
from contextlib import closing

import pytest
from conftest import make_settings, running_app
from ragkit import six_pages_waiting
from sqlalchemy import make_url


def _others() -> set[asyncio.Task]:
    return {task for task in asyncio.all_tasks() if task is not asyncio.current_task()}


async def test_an_app_stopped_while_its_workers_wait_for_the_database_leaves_no_task(backend) -> None:
    if backend.name != "sqlite-memory":
        pytest.skip("SQLite's write lock holds the workers in the database")
    before = _others()
    with tempfile.TemporaryDirectory(prefix="tollgate-qdrant-") as qdrant, \
            tempfile.TemporaryDirectory(prefix="tollgate-journal-") as journal, \
            closing(sqlite3.connect(make_url(backend.database_url).database, isolation_level=None, timeout=10,
                                    check_same_thread=False)) as other_process:
        settings = make_settings(backend, f"tollgate-test:{uuid.uuid4().hex}:", qdrant_path=qdrant,
                                 usage_journal_path=journal,
                                 rag={"vector_store_model": "embeddings", "ingestion_concurrency": 4})
        for _ in range(4):
            async with running_app(settings):
                # Another process holds the write lock: each worker's claim waits at BEGIN IMMEDIATE.
                await asyncio.to_thread(other_process.execute, "BEGIN IMMEDIATE")
                await asyncio.sleep(0.2)
                # The lock is let go while the app stops.
                asyncio.get_running_loop().call_later(0.3, other_process.execute, "COMMIT")
            await asyncio.sleep(0.3)  # what stopping left has had time to end
            left = _others() - before
            assert not left, [task.get_coro() for task in left]


async def test_a_worker_asked_to_stop_mid_document_hands_it_back_at_once(app_factory, embedding_upstream) -> None:
    rag, user, document = await six_pages_waiting(app_factory, embedding_upstream, embedding_concurrency=1)
    client = rag.client
    ingestion = client.app.state.context.ingestion  # type: ignore[attr-defined]

    embedding_upstream.behaviour.delay_seconds = 0.25  # still mid-document when 30% is seen
    worker = asyncio.ensure_future(ingestion.run_once())
    while (await client.get(f"/v1/documents/{document}", headers=user.headers)).json()["progress"] < 0.3:
        await asyncio.sleep(0.01)
    ingestion.stop()  # what the app's shutdown does
    assert await asyncio.wait_for(worker, 5)  # it ends after the batch in hand, not cancelled
    embedding_upstream.behaviour.delay_seconds = 0
    assert (await client.get(f"/v1/documents/{document}", headers=user.headers)).json()["status"] == "processing"

    # Another process takes it up at once, not after the lease, and the stopped attempt is not
    # counted against `max_ingestion_attempts`.
    replica = await app_factory(rag={"vector_store_model": "embeddings", "ingestion_concurrency": 0, "max_ingestion_attempts": 1})
    assert await replica.app.state.context.ingestion.run_once()  # type: ignore[attr-defined]
    done = (await replica.get(f"/v1/documents/{document}", headers=user.headers)).json()
    assert done["status"] == "ready" and done["chunks"] == 6, done
