"""Reading usage: a user's own records (the admin's reports are in `reports.py`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, time, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.common.schemas import from_unix, to_unix
from api.db.base import utcnow
from api.db.tables import ApiKey, Usage, UsageDaily
from api.usage.records import UsageRecord
from api.usage.schemas import Carbon, CarbonRange, MeUsage, UsageDetail, UsageMetrics

NANOS = 1_000_000_000


def _window(start_time: int | None, end_time: int | None, retention_days: int | None) -> tuple[datetime, datetime]:
    end = from_unix(end_time) or utcnow()
    start = from_unix(start_time) or end - timedelta(days=30)
    if retention_days is not None:
        # Records older than this may be purged: none is listed, so none is counted either
        # (the roll-ups still hold them).
        start = max(start, utcnow() - timedelta(days=retention_days))
    return start, end


def _midnight(moment: datetime) -> datetime:
    return datetime.combine(moment.astimezone(UTC).date(), time(), UTC)


async def _count_mine(session: AsyncSession, user_id: int, start: datetime, end: datetime, endpoint: str | None) -> int:
    """How many records the user has in [start, end]: the whole days inside from the daily
    roll-ups, only the partial days at either end from the records (an index range of the
    user's), so a user with millions of records is counted as fast as one with a few."""
    raw = select(func.count()).select_from(Usage).where(Usage.user_id == user_id)
    if endpoint is not None:  # the roll-ups have no endpoint
        return (await session.execute(raw.where(Usage.created >= start, Usage.created <= end, Usage.endpoint == endpoint))).scalar_one()
    try:
        first_whole = _midnight(start) if _midnight(start) == start else _midnight(start) + timedelta(days=1)
    except OverflowError:  # a start on the last day a date can hold: no whole day follows it
        first_whole = end
    last_whole = _midnight(end)
    if first_whole >= last_whole:
        return (await session.execute(raw.where(Usage.created >= start, Usage.created <= end))).scalar_one()
    days = (
        select(func.sum(UsageDaily.requests))
        .where(UsageDaily.dimension == "user", UsageDaily.group_id == user_id,
               UsageDaily.day >= first_whole.date(), UsageDaily.day < last_whole.date())
    )
    head = raw.where(Usage.created >= start, Usage.created < first_whole)
    tail = raw.where(Usage.created >= last_whole, Usage.created <= end)
    counts = (await session.execute(select(head.scalar_subquery(), days.scalar_subquery(), tail.scalar_subquery()))).one()
    return sum(int(count or 0) for count in counts)


async def list_my_usage(
    session: AsyncSession, user_id: int, offset: int, limit: int,
    start_time: int | None, end_time: int | None, endpoint: str | None,
    unwritten: Sequence[UsageRecord] = (), retention_days: int | None = None,
) -> tuple[list[MeUsage], int]:
    """The user's records, newest first, with `unwritten`: those of their calls that this
    process answered and has not written yet (they reach the database in batches), so a call
    shows at once. `unwritten` is taken before the query: one written meanwhile is then found
    by both, and listed once."""
    start, end = _window(start_time, end_time, retention_days)
    conditions = [Usage.user_id == user_id, Usage.created >= start, Usage.created <= end]
    if endpoint is not None:
        conditions.append(Usage.endpoint == endpoint)
    pending = [r for r in unwritten if r.user_id == user_id and start <= r.created <= end
               and (endpoint is None or r.endpoint == endpoint)]
    if pending:
        # Bounded by time, not by a list of ids (as many as the writer holds, beyond what a
        # statement may bind): the user's rows since the oldest of these, a fraction of a
        # second's worth while the database keeps up.
        since = min(r.created for r in pending)
        written = select(Usage.request_id).where(Usage.user_id == user_id, Usage.created >= since)
        already = set((await session.execute(written)).scalars())
        pending = [r for r in pending if r.request_id not in already]
    total = await _count_mine(session, user_id, start, end, endpoint)
    # The page of the merged list [offset, offset + limit) holds only rows the database lists
    # from `first` on: before it, at least len(pending) rows of the merged list precede them.
    first = max(0, offset - len(pending))
    query = (
        select(Usage, ApiKey.name)
        .outerjoin(ApiKey, ApiKey.id == Usage.key_id)
        .where(*conditions)
        .order_by(Usage.created.desc(), Usage.id.desc())
        .offset(first)
        .limit(offset + limit - first)
    )
    rows = [((usage.created, 0, usage.id), usage, key_name) for usage, key_name in (await session.execute(query)).all()]
    return _merge_page(rows, pending, first, offset, limit), total + len(pending)


_Listed = tuple[tuple[datetime, int, int], Usage | UsageRecord, str | None]


def _merge_page(rows: list[_Listed], pending: list[UsageRecord], first: int, offset: int, limit: int) -> list[MeUsage]:
    """The page [offset, offset + limit) of the database's rows (those from index `first`)
    merged with the records not written yet, newest first. A record not written yet sorts
    after a row created at the same moment (it will get a higher id), and after the records
    before it. When `first` > 0, the records newer than the first row are all before `offset`
    (at most len(pending) - 1 of them, after `first` rows): they only shift the others."""
    waiting: list[_Listed] = [((r.created, 1, n), r, r.key_name) for n, r in enumerate(pending)]
    before = 0
    if first > 0 and rows:
        newest_row = rows[0][0]
        before = sum(1 for w in waiting if w[0] > newest_row)
        waiting = [w for w in waiting if w[0] <= newest_row]
    merged = sorted(rows + waiting, key=lambda listed: listed[0], reverse=True)
    start = offset - first - before
    return [
        _me_usage(source, key_name, source.id if isinstance(source, Usage) else None)
        for _, source, key_name in merged[start:start + limit]
    ]


def usage_detail(usage: Usage | UsageRecord) -> UsageDetail:
    """One record's tokens, cost, carbon and timings, as every listing of records shows them.
    A record's fields are the table's columns (usage/writer.py checks it): either reads alike."""
    return UsageDetail(
        prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens, total_tokens=usage.total_tokens,
        cost=usage.cost_nanos / NANOS,
        carbon=Carbon(kWh=CarbonRange(min=usage.kwh_min, max=usage.kwh_max),
                      kgCO2eq=CarbonRange(min=usage.kgco2eq_min, max=usage.kgco2eq_max)),
        metrics=UsageMetrics(latency=usage.latency_ms, ttft=usage.ttft_ms),
    )


def _me_usage(usage: Usage | UsageRecord, key_name: str | None, usage_id: int | None) -> MeUsage:
    return MeUsage(
        id=usage_id, model=usage.model, key=key_name, endpoint=usage.endpoint, method=usage.method, status=usage.status,
        usage=usage_detail(usage), created=to_unix(usage.created),
    )
