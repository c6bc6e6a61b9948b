"""The usage writer stores what it is given, field for field, on both databases: records go
to the driver in parts of a bounded size."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from api.usage.records import UsageRecord
from api.usage.storable import MAX_COUNT
from api.usage.writer import ROWS_PER_STATEMENT
from conftest import Backend, usage_rows


def _record(index: int, start: datetime) -> UsageRecord:
    return UsageRecord(
        request_id=uuid.uuid4().hex, endpoint="/v1/chat/completions", method="POST", status=200 + index % 3,
        user_id=None, organization_id=index, key_id=index + 1, key_name=f"key-{index}", router_id=index % 7,
        provider_id=None if index % 2 else index, model=f"model-{index}", prompt_tokens=index, completion_tokens=2 * index,
        total_tokens=3 * index, cost_nanos=10**12 + index, kwh_min=index * 1e-9, kwh_max=index * 2e-9,
        kgco2eq_min=index * 3e-10, kgco2eq_max=index * 4e-10, latency_ms=index % 50, ttft_ms=None if index % 3 else index,
        created=start + timedelta(microseconds=1_001 * index),
    )


async def test_a_batch_of_several_statements_is_stored_field_for_field(client) -> None:
    start = datetime(2026, 11, 30, 23, 59, 59, 123456, tzinfo=UTC)
    records = [_record(index, start) for index in range(2 * ROWS_PER_STATEMENT + 5)]
    await client.app.state.context.usage_writer.write_now(records)

    rows = {row.request_id: row for row in await usage_rows(client)}
    assert len(rows) == len(records)
    for record in records:
        row = rows[record.request_id]
        stored = {name: getattr(row, name) for name in vars(record)}
        assert stored == vars(record)
        assert row.created.tzinfo is not None and row.created.utcoffset() == timedelta(0)


async def test_a_connection_lost_between_batches_is_replaced_without_a_warning(backend: Backend, client, caplog) -> None:
    """The writer keeps its connection from one batch to the next. One that died meanwhile (a
    database restart, an idle timeout) is replaced at once: nothing lost, nothing doubled, and
    no 'database unavailable' warning for an outage that is over."""
    if not backend.database_url.startswith("postgresql"):
        pytest.skip("connections are terminated with PostgreSQL's pg_terminate_backend")
    writer = client.app.state.context.usage_writer
    start = datetime.now(UTC)
    first, second = [_record(i, start) for i in range(3)], [_record(i, start) for i in range(3, 8)]
    await writer.write_now(first)

    url = make_url(backend.database_url)
    admin = await asyncpg.connect(host=url.host, port=url.port or 5432, user=url.username, password=url.password,
                                  database=url.database)
    try:
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    finally:
        await admin.close()
    assert killed >= 1

    with caplog.at_level(logging.WARNING, logger="tollgate.usage"):
        await writer.write_now(second)
    assert [r.getMessage() for r in caplog.records if r.name == "tollgate.usage"] == []
    stored = sorted(row.request_id for row in await usage_rows(client))
    assert stored == sorted(record.request_id for record in first + second)


async def test_with_a_full_queue_the_journal_keeps_the_queues_order(tmp_path) -> None:
    """The journal drops records as 'the next n are written', so it must hold them in the order
    the writer takes them, even when callers wait for room in the queue: else a crash could lose
    a record the journal had dropped unwritten."""
    import asyncio

    from sqlalchemy.ext.asyncio import create_async_engine

    from api.usage.journal import SUFFIX, UsageJournal, decode
    from api.usage.writer import UsageWriter

    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path}/unused.db")
    writer = UsageWriter(engine, max_queue=1, journal=UsageJournal(tmp_path / "journal"))  # never started
    start = datetime(2026, 12, 5, tzinfo=UTC)
    first, waiting, late = (_record(index, start) for index in range(3))
    await writer.record(first)
    blocked = asyncio.ensure_future(writer.record(waiting))  # the queue is full: it waits
    await asyncio.sleep(0.05)
    queue = writer._queue  # the order the writer would take them in
    taken = [queue.get_nowait()]  # room for one: `late` arrives at that very moment
    await writer.record(late)
    taken.append(queue.get_nowait())
    await asyncio.wait_for(blocked, timeout=2)
    taken.append(queue.get_nowait())
    [segment] = (tmp_path / "journal").glob("*" + SUFFIX)
    journaled = [decode(line).request_id for line in segment.read_bytes().splitlines()]  # type: ignore[union-attr]
    assert journaled == [record.request_id for record in taken]
    await engine.dispose()


async def test_a_record_with_content_no_column_can_take_is_stored_with_it_replaced(client) -> None:
    """Never dropped for its content: a NUL or a lone surrogate becomes U+FFFD, text too long is
    cut to its column, a count out of range (a provider may answer anything) is held at the
    column's bound, a non-finite float is 0. The records beside it are stored as they are."""
    start = datetime.now(UTC)
    good = _record(1, start)
    bad = UsageRecord(
        request_id=uuid.uuid4().hex, endpoint="/v1/ocr", method="POST", status=404, user_id=None, organization_id=None,
        key_id=None, key_name="k\ud800" + "k" * 300, model="ocr\u0000", prompt_tokens=10**30, completion_tokens=-(10**30),
        total_tokens=0, kwh_min=float("nan"), kwh_max=float("inf"), latency_ms=2**40,
    )
    writer = client.app.state.context.usage_writer
    await writer.record(bad)
    await writer.record(good)
    rows = {row.request_id: row for row in await usage_rows(client)}
    assert set(rows) == {bad.request_id, good.request_id}
    stored = rows[bad.request_id]
    assert stored.model == "ocr\ufffd" and stored.key_name == ("k\ufffd" + "k" * 300)[:255]
    assert (stored.prompt_tokens, stored.completion_tokens) == (MAX_COUNT, 0)  # counts: summed into the roll-ups
    assert (stored.kwh_min, stored.kwh_max, stored.latency_ms) == (0.0, 0.0, 2**31 - 1)
    assert {name: getattr(rows[good.request_id], name) for name in vars(good)} == vars(good)
