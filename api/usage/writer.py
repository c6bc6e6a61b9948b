"""Usage records leave the request path through a bounded queue and reach the database in
batches. A full queue slows requests down rather than dropping records; a failed write is
retried; shutdown drains the queue (for a bounded time when the records are journaled).

While the database is down (a restart, a failover) the batch in hand is retried with back-off
and new records wait in the queue; once it is back every record is written exactly once: a
batch whose commit was lost with its connection may have been written, and then its retry
trips the unique request id and falls back to one insert per record, skipping those in."""

from __future__ import annotations

import asyncio
import logging
from operator import attrgetter
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from api.db.engine import database_unavailable
from api.db.tables import ApiKey, Organization, Usage, User
from api.usage.journal import OpenedCall, UsageJournal
from api.usage.records import UsageRecord
from api.usage.rollups import add_to_rollups, daily_sums
from api.usage.storable import storable

logger = logging.getLogger("tollgate.usage")

# Retries start fast (a lost connection is replaced at once) and back off to this: a
# database that comes back is written to within a couple of seconds.
MAX_RETRY_DELAY_SECONDS = 2.0

# Rows per executemany: a batch is sent in parts of at most this many, so neither the event
# loop (binding them) nor a database sharing its cores (inserting them) is busy for long at a time.
ROWS_PER_STATEMENT = 32

# The documented Core bulk INSERT: executed with a list of rows, the driver's executemany
# (asyncpg pipelines it). A record's fields are the table's columns (checked below), so its
# own `__dict__` is the row: no copy per record.
_INSERT_USAGE = insert(Usage.__table__)
if {column.key for column in Usage.__table__.c if not column.primary_key} != set(UsageRecord.__dataclass_fields__):
    raise RuntimeError("UsageRecord's fields must be the usage table's columns")


# On PostgreSQL a batch's rows go in with COPY (asyncpg's `copy_records_to_table`, through
# SQLAlchemy's documented driver connection): executemany cost ~30 µs of the writer's CPU per
# record here (SQLAlchemy's parameters, then one Bind/Execute per row), COPY a few.
_USAGE_COLUMNS = tuple(column.key for column in Usage.__table__.c if not column.primary_key)
_usage_row = attrgetter(*_USAGE_COLUMNS)
# An integrity constraint refused a row (SQLSTATE class 23): a record already written.
_INTEGRITY_SQLSTATE = "23"

QUEUE_FULL_POLL_SECONDS = 0.01

Spent = dict[type[User] | type[ApiKey] | type[Organization], dict[int, int]]


class UsageWriter:
    def __init__(
        self,
        engine: AsyncEngine,
        max_queue: int = 10_000,
        batch_size: int = 500,
        interval_seconds: float = 0.2,
        journal: UsageJournal | None = None,
        drain_seconds: float = 10.0,
    ) -> None:
        self._journal = journal
        self._drain_seconds = drain_seconds
        self._stopped = False
        self._engine = engine
        self._queue: asyncio.Queue[UsageRecord] = asyncio.Queue(maxsize=max_queue)
        self._batch_size = batch_size
        # Kept from one batch to the next while records keep coming: a checkout from the pool
        # (its ping, its reset) cost as much CPU here as writing a hundred records.
        self._connection: AsyncConnection | None = None
        self._interval = interval_seconds
        # Set while `flush` waits: the batch gathering now, and the next ones, go without waiting.
        self._hurry = asyncio.Event()
        self._idle = asyncio.Event()  # set while the writing task waits for a record
        self._task: asyncio.Task[None] | None = None
        # Records taken off the queue but not yet committed: stop() writes them if cut short.
        self._in_hand: list[UsageRecord] = []
        # Every record given to `record` and not yet committed (nor dropped), for a user's read
        # of their own usage (`unwritten`). Keyed by identity, not by position: records waiting
        # for room in a full queue may enter it in another order than they came.
        self._unwritten: dict[int, UsageRecord] = {}
        self._written = 0
        # Requests under way that will bring a record: at shutdown, requests cut by the
        # server's deadline are still finishing (uvicorn cancels them and moves on at once).
        self._open = 0
        self._none_open = asyncio.Event()
        self._none_open.set()

    @property
    def pending(self) -> int:
        return self._queue.qsize() + len(self._in_hand)

    @property
    def written(self) -> int:
        return self._written

    def unwritten(self, user_id: int) -> list[UsageRecord]:
        """This user's records that this process answered and has not written yet (a
        snapshot: each is in the database, or still here, at any later moment)."""
        return [record for record in self._unwritten.values() if record.user_id == user_id]

    def expect(self) -> None:
        """A request has started that will call `record` once, whatever happens to it."""
        self._open += 1
        self._none_open.clear()

    def started(self, cut: UsageRecord) -> OpenedCall | None:
        """A stream is about to answer: journal `cut`, its record should its process die before
        the end. Pass what this returns to `record` with the call's real record."""
        if self._journal is None:
            return None
        try:
            return self._journal.open_call(cut)
        except TypeError:  # text that cannot be written as UTF-8: replaced, as in `record`
            return self._journal.open_call(storable(cut))

    async def record(self, record: UsageRecord, expected: bool = False, started: OpenedCall | None = None) -> None:
        if expected:
            self._open -= 1
            if self._open == 0:
                self._none_open.set()
        # Room first, then the journal and the queue with no await between them: the journal
        # counts records done in the order it appended them, so the queue's order must be its
        # own (a put() waiting for room can be overtaken by one arriving as room is made).
        while self._queue.full():  # the database has been away for a while: the caller waits
            await asyncio.sleep(QUEUE_FULL_POLL_SECONDS)
        if self._journal is not None:
            try:
                self._journal.append(record)  # on disk before the answer leaves: a crash loses nothing
            except TypeError:
                # Text that cannot be written as UTF-8 (an unpaired surrogate): journaled, and
                # then stored, with it replaced, rather than failing the call's answer.
                record = storable(record)
                self._journal.append(record)
            if started is not None:
                self._journal.close_call(started)
        self._unwritten[id(record)] = record
        self._queue.put_nowait(record)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="usage-writer")

    async def stop(self, wait_for_open_seconds: float = 5.0) -> None:
        """Wait (a bounded time) for the requests still under way to bring their records, write
        everything queued or in hand, then stop.

        With a journal, writing is given `drain_seconds`: a database still down then would
        hold the shutdown forever, and the records are on disk; the journal keeps those not
        written, for the next process on its folder or `tollgate worker` to write. Without one,
        nothing else would save them: it waits for the database, logging every retry."""
        if self._stopped:
            return
        self._stopped = True
        try:
            async with asyncio.timeout(wait_for_open_seconds):
                await self._none_open.wait()
        except TimeoutError:
            logger.error("%d requests still had no usage record at shutdown", self._open)
        if self._task is not None:
            # Cancelled only while it waits for a record, never in the middle of an insert
            # (see `api.runtime.background`); with a journal, a database away holds it no
            # longer than `drain_seconds`.
            try:
                async with asyncio.timeout(self._drain_seconds if self._journal is not None else None):
                    await self._until_idle()
            except TimeoutError:
                pass
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._journal is None:
            await self._drain()
            await self._release_connection()
            return
        try:
            async with asyncio.timeout(self._drain_seconds):
                await self._drain()
                await self._release_connection()
        except TimeoutError:
            logger.error("the database did not take the last usage records within %.0fs of shutdown: %d stay in the "
                         "usage journal (%s), for the next process on that folder or `tollgate worker` to write",
                         self._drain_seconds, self.pending, self._journal.directory)
        # Only segments whose records are all written are deleted; the others are left, unlocked.
        self._journal.close()

    async def _drain(self) -> None:
        while self._in_hand or not self._queue.empty():
            if not self._in_hand:
                self._in_hand = self._take(self._batch_size)
            await self._write(self._in_hand)

    async def write_now(self, records: list[UsageRecord]) -> None:
        """Write records that never went through the queue (a dead process's, from its
        journal), retrying like the others; those already in the database are skipped."""
        await self._store(await self._not_written(records))

    async def _not_written(self, records: list[UsageRecord]) -> list[UsageRecord]:
        """`records` less those already in the database, found in one query per thousand: a
        replayed journal holds mostly calls written long ago, each a failed insert otherwise."""
        try:
            async with self._engine.connect() as connection:
                written: set[str] = set()
                for start in range(0, len(records), 1000):
                    ids = [r.request_id for r in records[start:start + 1000]]
                    written.update((await connection.execute(select(Usage.request_id).where(Usage.request_id.in_(ids)))).scalars())
        except DBAPIError:
            return list(records)  # the inserts find them, one by one
        return [r for r in records if r.request_id not in written]

    async def flush(self) -> None:
        """Return once every record queued so far is written (tests and shutdown)."""
        if self._task is not None and not self._task.done():
            self._hurry.set()
            try:
                await self._queue.join()
            finally:
                self._hurry.clear()
            return
        await self._drain()

    def _take(self, at_most: int) -> list[UsageRecord]:
        batch: list[UsageRecord] = []
        while len(batch) < at_most and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch

    async def _until_idle(self) -> None:
        while not self._idle.is_set():  # checked again on waking: a record may have come since
            await self._idle.wait()

    async def _run(self) -> None:
        while True:
            if self._queue.empty():
                await self._release_connection()  # traffic stopped: give the connection back
            self._idle.set()
            first = await self._queue.get()
            self._idle.clear()
            self._in_hand = [first]
            try:
                async with asyncio.timeout(self._interval):  # let a batch gather...
                    await self._hurry.wait()  # ...unless someone waits for it
            except TimeoutError:
                pass
            self._in_hand += self._take(self._batch_size - 1)
            await self._write(self._in_hand)

    async def _release_connection(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    async def _write(self, batch: list[UsageRecord]) -> None:
        await self._store(batch)
        for record in batch:
            self._unwritten.pop(id(record), None)
        if batch is self._in_hand:
            self._in_hand = []
        if self._journal is not None:
            self._journal.done(len(batch))
        for _ in batch:
            self._queue.task_done()

    async def _store(self, batch: list[UsageRecord]) -> None:
        """Insert `batch`, retrying transient failures until it is in. A failure that is not
        transient (a record the database or its driver refuses, or one already written)
        switches to one insert per record, each made storable first, so one bad record can
        neither block every later one nor be lost."""
        pending = list(batch)
        one_by_one = False
        delay = 0.1
        while pending:
            try:
                if one_by_one:
                    await self._insert_each(pending)
                else:
                    await self._insert(pending)
                    pending.clear()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                transient = _is_transient(exc)
                if not one_by_one and not transient:
                    one_by_one = True
                    continue
                if transient:  # expected in an outage: one line, no traceback
                    logger.warning("database unavailable, %d usage records wait (%d queued); retrying in %.1fs: %r",
                                   len(pending), self._queue.qsize(), delay, exc)
                else:
                    logger.exception("writing %d usage records failed; retrying in %.1fs", len(pending), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY_SECONDS)

    async def _insert(self, records: list[UsageRecord]) -> None:
        # Per budget holder table, what its rows spent: a key's, its user's, its organisation's.
        spent: Spent = {User: {}, ApiKey: {}, Organization: {}}
        for record in records:
            if not record.cost_nanos:
                continue
            for table, holder in ((User, record.user_id), (ApiKey, record.key_id), (Organization, record.organization_id)):
                if holder is not None:
                    spent[table][holder] = spent[table].get(holder, 0) + record.cost_nanos
        rollups = daily_sums(records)
        kept, self._connection = self._connection, None
        try:
            await self._insert_on(kept or await self._engine.connect(), records, spent, rollups)
        except DBAPIError as error:
            if kept is None or not _is_transient(error):
                raise
            # The kept connection died while it waited (a restart, an idle timeout): what a
            # checkout's ping would have found. Once more on a fresh one, before any warning.
            await self._insert_on(await self._engine.connect(), records, spent, rollups)
        self._written += len(records)  # committed

    async def _insert_on(
        self, connection: AsyncConnection, records: list[UsageRecord], spent: Spent, rollups: list[dict[str, Any]]
    ) -> None:
        # A bare connection, no ORM session: its bookkeeping cost a millisecond a batch here.
        try:
            async with connection.begin():
                for table, amounts in spent.items():
                    if not amounts:
                        continue
                    # Budgets move in the same transaction as the records: each cost counts once.
                    columns = table.__table__.c
                    await connection.execute(
                        update(table.__table__)
                        .where(columns.id == bindparam("holder"), columns.budget_nanos.is_not(None))
                        .values(budget_nanos=columns.budget_nanos - bindparam("spent")),
                        [{"holder": holder, "spent": amount} for holder, amount in amounts.items()],
                    )
                # The daily roll-ups too: a report over whole days adds up exactly the records
                # committed, each once, with no job to run and nothing to reconcile.
                await add_to_rollups(connection, rollups)
                # Last: by now SQLAlchemy has begun the transaction the COPY joins.
                await self._insert_rows(connection, records)
        except Exception as error:
            if isinstance(error, IntegrityError) or str(getattr(error, "sqlstate", "")).startswith(_INTEGRITY_SQLSTATE):
                self._connection = connection  # a record refused, rolled back: the connection is sound
                raise
            await _discard(connection)  # broken: never reused
            raise
        except BaseException:
            # Cut mid-statement (a cancelled shutdown): never reused.
            await _discard(connection)
            raise
        self._connection = connection

    @staticmethod
    async def _insert_rows(connection: AsyncConnection, records: list[UsageRecord]) -> None:
        if connection.dialect.name == "postgresql" and len(records) > 1:
            driver = (await connection.get_raw_connection()).driver_connection
            if driver is not None and driver.is_in_transaction():
                await driver.copy_records_to_table(
                    Usage.__tablename__, records=[_usage_row(record) for record in records], columns=_USAGE_COLUMNS
                )
                return
        # One record at a time (after a failed batch) as SQLAlchemy's own INSERT, whose errors
        # it classifies (an IntegrityError: already written).
        for start in range(0, len(records), ROWS_PER_STATEMENT):
            await connection.execute(_INSERT_USAGE, [vars(r) for r in records[start:start + ROWS_PER_STATEMENT]])

    async def _insert_each(self, records: list[UsageRecord]) -> None:
        """Insert records one at a time, removing each from `records` once settled. Each is
        made storable first (`storable`): what the database refuses in its content (a NUL, a
        name too long, a count out of range) is replaced, never a reason to drop the record."""
        while records:
            record = storable(records[0])
            if record is not records[0]:
                logger.warning("usage record %s had content no database column can take; stored with it replaced: %r",
                               record.request_id, records[0])
            try:
                await self._insert([record])
            except IntegrityError:
                logger.info("usage record %s was already written", record.request_id)
            except DBAPIError as exc:
                if _is_transient(exc):
                    raise
                # Not its content (made storable above): the table itself is wrong. Nothing else
                # can be written either; kept out of the way of the others, loudly.
                logger.error("usage record %s cannot be stored and is dropped: %r", record.request_id, record)
            records.pop(0)


async def _discard(connection: AsyncConnection) -> None:
    try:
        await connection.invalidate()
        await connection.close()
    except Exception:  # noqa: BLE001  (it is being thrown away: nothing more to do with it)
        logger.debug("closing a failed usage-writer connection failed", exc_info=True)


def _is_transient(exc: BaseException) -> bool:
    """A failure of the connection or the server, not of the data: worth retrying as is."""
    return database_unavailable(exc)
