"""Reading usage: a user's own records, and the admin's totals per day."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import Date, case, cast, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from api.common.schemas import from_unix, to_unix
from api.db.base import utcnow
from api.db.tables import ApiKey, Usage, User
from api.usage.records import UsageRecord
from api.usage.schemas import Carbon, CarbonRange, MeUsage, UsageDetail, UsageGroup, UsageMetrics, UsageTotal

NANOS = 1_000_000_000


def _window(start_time: int | None, end_time: int | None) -> tuple[datetime, datetime]:
    end = from_unix(end_time) or utcnow()
    start = from_unix(start_time) or end - timedelta(days=30)
    return start, end


async def list_my_usage(
    session: AsyncSession, user_id: int, offset: int, limit: int,
    start_time: int | None, end_time: int | None, endpoint: str | None,
    unwritten: Sequence[UsageRecord] = (),
) -> tuple[list[MeUsage], int]:
    """The user's records, newest first, with `unwritten`: those of their calls that this
    process answered and has not written yet (they reach the database in batches), so a call
    shows at once. `unwritten` is taken before the query: one written meanwhile is then found
    by both, and listed once."""
    start, end = _window(start_time, end_time)
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
    total = (await session.execute(select(func.count(Usage.id)).where(*conditions))).scalar_one()
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


def _me_usage(usage: Usage | UsageRecord, key_name: str | None, usage_id: int | None) -> MeUsage:
    # A record's fields are the table's columns (usage/writer.py checks it): either reads alike.
    return MeUsage(
        id=usage_id, model=usage.model, key=key_name, endpoint=usage.endpoint, method=usage.method, status=usage.status,
        usage=UsageDetail(
            prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens, total_tokens=usage.total_tokens,
            cost=usage.cost_nanos / NANOS,
            carbon=Carbon(kWh=CarbonRange(min=usage.kwh_min, max=usage.kwh_max),
                          kgCO2eq=CarbonRange(min=usage.kgco2eq_min, max=usage.kgco2eq_max)),
            metrics=UsageMetrics(latency=usage.latency_ms, ttft=usage.ttft_ms),
        ),
        created=to_unix(usage.created),
    )


def _day(dialect: str) -> ColumnElement[object]:
    # Sessions run in UTC (see db.engine), so both give the UTC calendar day.
    return func.date(Usage.created) if dialect == "sqlite" else cast(Usage.created, Date)


_GROUP_COLUMNS = {UsageGroup.user: Usage.user_id, UsageGroup.organization: Usage.organization_id, UsageGroup.router: Usage.router_id}


async def usage_totals(
    session: AsyncSession, group: UsageGroup, start_time: int | None, end_time: int | None, group_id: int | None
) -> list[UsageTotal]:
    start, end = _window(start_time, end_time)
    day = _day(session.bind.dialect.name).label("day")
    key = _GROUP_COLUMNS[group]
    query = (
        select(
            day, key,
            func.count(Usage.id), func.sum(case((Usage.status >= 400, 1), else_=0)),
            func.sum(Usage.prompt_tokens), func.sum(Usage.completion_tokens), func.sum(Usage.cost_nanos),
            func.sum(Usage.kwh_min), func.sum(Usage.kwh_max), func.sum(Usage.kgco2eq_min), func.sum(Usage.kgco2eq_max),
        )
        .where(Usage.created >= start, Usage.created <= end)
        .group_by(day, key)
        .order_by(day, key)
    )
    if group_id is not None:
        query = query.where(key == group_id)
    rows = (await session.execute(query)).all()
    budgets: dict[int, int | None] = {}
    if group is UsageGroup.user:
        ids = {row[1] for row in rows if row[1] is not None}
        if ids:
            budgets = dict((await session.execute(select(User.id, User.budget_nanos).where(User.id.in_(ids)))).all())
    return [
        UsageTotal(
            day=str(row[0]), group=group, id=row[1], requests=row[2], errors=int(row[3] or 0),
            prompt_tokens=int(row[4] or 0), completion_tokens=int(row[5] or 0),
            total_tokens=int(row[4] or 0) + int(row[5] or 0), cost=int(row[6] or 0) / NANOS,
            kWh=CarbonRange(min=row[7] or 0.0, max=row[8] or 0.0), kgCO2eq=CarbonRange(min=row[9] or 0.0, max=row[10] or 0.0),
            budget=None if budgets.get(row[1]) is None else budgets[row[1]] / NANOS,
        )
        for row in rows
    ]
