"""/v1/me/usage and the administrators' reports under /v1/admin/usage. Each answers JSON, or
CSV with `?format=csv` (or `Accept: text/csv`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from api.common.schemas import CLIENT_ERRORS, MAX_TIMESTAMP, ListPage
from api.http.report_formats import WantsCsv, report_response
from api.http.deps import Caller, Session, SettingsDep, UsageWriterDep, require_admin
from api.http.params import QueryId
from api.usage import reports, service
from api.usage.schemas import MeUsage, TopOrder, UsageGroup, UsageRecordOut, UsageTop, UsageTotal
from api.usage.tags import TAG_PATTERN

routes = APIRouter(tags=["usage"], responses=CLIENT_ERRORS)

TimeParam = Annotated[int | None, Query(ge=0, le=MAX_TIMESTAMP)]
TagParam = Annotated[str | None, Query(pattern=f"^{TAG_PATTERN.pattern}$", description="Only the calls with this tag.")]
Offset = Annotated[int, Query(ge=0, le=2**31 - 1)]
Limit = Annotated[int, Query(ge=1, le=100)]
StatusParam = Annotated[int | None, Query(ge=100, le=599)]
TextParam = Annotated[str | None, Query(min_length=1, max_length=255)]


@routes.get("/v1/me/usage", response_model=ListPage[MeUsage])
async def my_usage(
    caller: Caller,
    session: Session,
    writer: UsageWriterDep,
    settings: SettingsDep,
    csv: WantsCsv,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    start_time: TimeParam = None,
    end_time: TimeParam = None,
    endpoint: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """Your calls, newest first, including those this process answered moments ago and has
    not written yet (their `id` is null until it has)."""
    user_id = caller.require_user()
    data, total = await service.list_my_usage(
        session, user_id, offset, limit, start_time, end_time, endpoint, unwritten=writer.unwritten(user_id),
        retention_days=settings.settings.usage_retention_days,
    )
    return report_response(MeUsage, data, total, csv, "my-usage")


@routes.get("/v1/admin/usage", dependencies=[Depends(require_admin)], response_model=ListPage[UsageTotal])
async def usage_totals(
    session: Session,
    csv: WantsCsv,
    group_by: UsageGroup = UsageGroup.user,
    id: QueryId = None,
    tag: TagParam = None,
    start_time: TimeParam = None,
    end_time: TimeParam = None,
) -> Response:
    """Requests, tokens, cost and carbon per UTC day and per user, key, organization, router or
    tag, over the whole days from `start_time`'s to `end_time`'s (by default the last 30 days)."""
    data = await reports.usage_totals(session, group_by, start_time, end_time, id, tag)
    return report_response(UsageTotal, data, len(data), csv, f"usage-by-{group_by.value}")


@routes.get("/v1/admin/usage/top", dependencies=[Depends(require_admin)], response_model=ListPage[UsageTop])
async def top_spenders(
    session: Session,
    csv: WantsCsv,
    group_by: UsageGroup = UsageGroup.user,
    order_by: TopOrder = TopOrder.cost,
    limit: Limit = 10,
    tag: TagParam = None,
    start_time: TimeParam = None,
    end_time: TimeParam = None,
) -> Response:
    """The users, keys, organizations, routers or tags that spent the most over the whole days
    from `start_time`'s to `end_time`'s (by default the last 30 days), biggest first."""
    data = await reports.top(session, group_by, start_time, end_time, order_by, limit, tag)
    return report_response(UsageTop, data, len(data), csv, f"top-{group_by.value}")


@routes.get("/v1/admin/usage/records", dependencies=[Depends(require_admin)], response_model=ListPage[UsageRecordOut])
async def search_records(
    session: Session,
    csv: WantsCsv,
    user: QueryId = None,
    key: QueryId = None,
    organization: QueryId = None,
    router: QueryId = None,
    model: TextParam = None,
    status: StatusParam = None,
    tag: TagParam = None,
    end_user: TextParam = None,
    start_time: TimeParam = None,
    end_time: TimeParam = None,
    offset: Offset = 0,
    limit: Limit = 10,
) -> Response:
    """Single requests' records, newest first, between `start_time` and `end_time` (by default
    the last 30 days). `total` counts the matches up to 10,000: narrow the search for more."""
    search = reports.RecordSearch(user, key, organization, router, model, status, tag, end_user, start_time, end_time)
    data, total = await reports.search_records(session, search, offset, limit)
    return report_response(UsageRecordOut, data, total, csv, "usage-records")
