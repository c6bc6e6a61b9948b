"""The administrators' reports: usage per day and group, the top spenders of a period, and a
search of the records themselves.

Reports over days read the daily roll-ups (`usage_daily`, kept by the usage writer in the
transaction of the records), so their cost grows with days × groups, not with the records; they
cover whole UTC days, and keep working once raw records are purged. Only the search reads the
raw records, page by page, through the indexes on time, user and key."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import BigInteger, ColumnElement, Select, cast, desc, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.common.schemas import from_unix, to_unix
from api.db.base import utcnow
from api.db.tables import ApiKey, Organization, Router, Usage, UsageDaily, User
from api.errors import InvalidRequestError
from api.usage.schemas import TopOrder, UsageGroup, UsageRecordOut, UsageTop, UsageTotal
from api.usage.service import usage_detail

NANOS = 1_000_000_000
DEFAULT_DAYS = 30
# Counting every match of a wide search would read them all: the count stops here.
MAX_COUNTED = 10_000

_D = UsageDaily
# The sums every report reads, in this order (see `_totals`). PostgreSQL's SUM of a bigint is
# a numeric, read as a Decimal (slow to convert, row by row): cast back to a bigint, which the
# sums of a gateway's usage never overflow.
_SUMS = (*(cast(func.sum(column), BigInteger) for column in (_D.requests, _D.errors, _D.prompt_tokens,
                                                                _D.completion_tokens, _D.cost_nanos)),
         func.sum(_D.kwh_min), func.sum(_D.kwh_max), func.sum(_D.kgco2eq_min), func.sum(_D.kgco2eq_max))
# Whose name a top list shows, per group.
_NAMES = {UsageGroup.user: (User.id, User.email), UsageGroup.key: (ApiKey.id, ApiKey.name),
          UsageGroup.organization: (Organization.id, Organization.name), UsageGroup.router: (Router.id, Router.name)}


def window(start_time: int | None, end_time: int | None) -> tuple[datetime, datetime]:
    """From `start_time` to `end_time` (Unix seconds); by default the last 30 days to now."""
    end = from_unix(end_time) or utcnow()
    start = from_unix(start_time) or end - timedelta(days=DEFAULT_DAYS)
    if start > end:
        raise InvalidRequestError("start_time must not be after end_time")
    return start, end


def _days(start_time: int | None, end_time: int | None) -> tuple[date, date]:
    start, end = window(start_time, end_time)
    return start.date(), end.date()


def _group(group: UsageGroup, first: date, last: date, group_id: int | None, tag: str | None) -> tuple[ColumnElement, Select]:
    """The group's key column and the roll-up rows a report of it reads. A tag's totals are the
    sums of one dimension's rows over its groups: organisations', the fewest rows."""
    if group is UsageGroup.tag and group_id is not None:
        raise InvalidRequestError("id selects a user, key, organization or router: it cannot be used with group_by=tag")
    dimension = UsageGroup.organization.value if group is UsageGroup.tag else group.value
    key = _D.tag if group is UsageGroup.tag else _D.group_id
    query = select(key, *_SUMS).where(_D.dimension == dimension, _D.day >= first, _D.day <= last)
    if group_id is not None:
        query = query.where(_D.group_id == group_id)
    if tag is not None:
        query = query.where(_D.tag == tag)
    return key, query


def _identity(group: UsageGroup, key: int | str) -> tuple[int | None, str | None]:
    """The (id, tag) of a group's key: 0 and '' are how the roll-ups store none."""
    if group is UsageGroup.tag:
        return None, str(key) or None
    return int(key) or None, None


def _totals(sums: tuple) -> dict[str, Any]:
    """A report row's sums, as the fields of UsageTotal and UsageTop."""
    requests, errors, prompt, completion, cost = (int(value or 0) for value in sums[:5])
    kwh_min, kwh_max, kg_min, kg_max = (float(value or 0.0) for value in sums[5:])
    return {"requests": requests, "errors": errors, "prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion, "cost": cost / NANOS,
            "kWh": {"min": kwh_min, "max": kwh_max}, "kgCO2eq": {"min": kg_min, "max": kg_max}}


# A report holds thousands of rows: they are validated in one call (pydantic's loop, in Rust),
# which costs a fraction of building each model in Python.
_TOTALS = TypeAdapter(list[UsageTotal])
_TOP = TypeAdapter(list[UsageTop])


async def usage_totals(
    session: AsyncSession, group: UsageGroup, start_time: int | None, end_time: int | None, group_id: int | None,
    tag: str | None = None,
) -> list[UsageTotal]:
    """Per UTC day and group, the days from `start_time`'s to `end_time`'s, both whole."""
    first, last = _days(start_time, end_time)
    key, query = _group(group, first, last, group_id, tag)
    rows = (await session.execute(query.add_columns(_D.day).group_by(_D.day, key).order_by(_D.day, key))).all()
    budgets: dict[int, int | None] = {}
    if group is UsageGroup.user:
        ids = {int(row[0]) for row in rows if row[0]}
        if ids:
            budgets = dict((await session.execute(select(User.id, User.budget_nanos).where(User.id.in_(ids)))).all())
    totals = []
    for row in rows:
        id_, tag_ = _identity(group, row[0])
        budget = budgets.get(id_) if id_ is not None else None
        totals.append({"day": str(row[-1]), "group": group, "id": id_, "tag": tag_, **_totals(tuple(row[1:-1])),
                       "budget": None if budget is None else budget / NANOS})
    return _TOTALS.validate_python(totals)


_ORDER = {TopOrder.cost: func.sum(_D.cost_nanos), TopOrder.requests: func.sum(_D.requests),
          TopOrder.total_tokens: func.sum(_D.prompt_tokens) + func.sum(_D.completion_tokens)}


async def top(
    session: AsyncSession, group: UsageGroup, start_time: int | None, end_time: int | None, order: TopOrder, limit: int,
    tag: str | None = None,
) -> list[UsageTop]:
    """The `limit` groups that spent the most (`order`) over the period's whole days."""
    first, last = _days(start_time, end_time)
    key, query = _group(group, first, last, None, tag)
    rows = (await session.execute(query.group_by(key).order_by(desc(_ORDER[order]), key).limit(limit))).all()
    names: dict[int, str] = {}
    if group in _NAMES:
        id_column, name_column = _NAMES[group]
        ids = [int(row[0]) for row in rows if row[0]]
        if ids:
            names = dict((await session.execute(select(id_column, name_column).where(id_column.in_(ids)))).all())
    ranked = []
    for row in rows:
        id_, tag_ = _identity(group, row[0])
        ranked.append({"group": group, "id": id_, "name": names.get(id_) if id_ is not None else None, "tag": tag_,
                       **_totals(tuple(row[1:]))})
    return _TOP.validate_python(ranked)


@dataclass(frozen=True)
class RecordSearch:
    """Which records: every given field must match; times are Unix seconds, both included."""

    user: int | None = None
    key: int | None = None
    organization: int | None = None
    router: int | None = None
    model: str | None = None
    status: int | None = None
    tag: str | None = None
    end_user: str | None = None
    start_time: int | None = None
    end_time: int | None = None


async def search_records(session: AsyncSession, search: RecordSearch, offset: int, limit: int) -> tuple[list[UsageRecordOut], int]:
    """The matching records, newest first, and their count (up to MAX_COUNTED)."""
    start, end = window(search.start_time, search.end_time)
    conditions = [Usage.created >= start, Usage.created <= end]
    for column, value in ((Usage.user_id, search.user), (Usage.key_id, search.key),
                          (Usage.organization_id, search.organization), (Usage.router_id, search.router),
                          (Usage.model, search.model), (Usage.status, search.status), (Usage.tag, search.tag),
                          (Usage.end_user, search.end_user)):
        if value is not None:
            conditions.append(column == value)
    counted = select(Usage.id).where(*conditions).limit(MAX_COUNTED).subquery()
    total = (await session.execute(select(func.count()).select_from(counted))).scalar_one()
    query = select(Usage).where(*conditions).order_by(Usage.created.desc(), Usage.id.desc()).offset(offset).limit(limit)
    return [_record_out(usage) for usage in (await session.execute(query)).scalars()], total


def _record_out(usage: Usage) -> UsageRecordOut:
    return UsageRecordOut(
        id=usage.id, request_id=usage.request_id, created=to_unix(usage.created), user=usage.user_id,
        organization=usage.organization_id, key=usage.key_id, key_name=usage.key_name, router=usage.router_id,
        provider=usage.provider_id, model=usage.model, endpoint=usage.endpoint, method=usage.method, status=usage.status,
        tag=usage.tag, end_user=usage.end_user, usage=usage_detail(usage),
    )
