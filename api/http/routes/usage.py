"""/v1/me/usage and /v1/admin/usage."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from api.common.schemas import CLIENT_ERRORS, MAX_TIMESTAMP, ListPage
from api.http.deps import Caller, Session, UsageWriterDep, require_admin
from api.http.params import QueryId
from api.usage import service
from api.usage.schemas import MeUsage, UsageGroup, UsageTotal

routes = APIRouter(tags=["usage"], responses=CLIENT_ERRORS)

TimeParam = Annotated[int | None, Query(ge=0, le=MAX_TIMESTAMP)]


@routes.get("/v1/me/usage")
async def my_usage(
    caller: Caller,
    session: Session,
    writer: UsageWriterDep,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
    start_time: TimeParam = None,
    end_time: TimeParam = None,
    endpoint: Annotated[str | None, Query(max_length=64)] = None,
) -> ListPage[MeUsage]:
    """Your calls, newest first, including those this process answered moments ago and has
    not written yet (their `id` is null until it has)."""
    user_id = caller.require_user()
    data, total = await service.list_my_usage(
        session, user_id, offset, limit, start_time, end_time, endpoint, unwritten=writer.unwritten(user_id)
    )
    return ListPage(data=data, total=total)


@routes.get("/v1/admin/usage", dependencies=[Depends(require_admin)])
async def usage_totals(
    session: Session,
    group_by: UsageGroup = UsageGroup.user,
    id: QueryId = None,
    start_time: TimeParam = None,
    end_time: TimeParam = None,
) -> ListPage[UsageTotal]:
    """Requests, tokens, cost and carbon per day and per user, organization or router."""
    data = await service.usage_totals(session, group_by, start_time, end_time, id)
    return ListPage(data=data, total=len(data))
