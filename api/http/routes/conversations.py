"""/v1/me/sessions and /v1/admin/sessions: conversation records (docs/responses.md)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from api.common.schemas import CLIENT_ERRORS, MAX_ID, ListPage
from api.conversations import views
from api.http.deps import Caller, ConversationsDep, require_admin, Session
from api.http.params import PathId, QueryId

routes = APIRouter(prefix="/v1", responses=CLIENT_ERRORS, tags=["conversations"])

Offset = Annotated[int, Query(ge=0, le=MAX_ID)]
Limit = Annotated[int, Query(ge=1, le=100)]


@routes.get("/me/sessions")
async def my_sessions(caller: Caller, session: Session, offset: Offset = 0, limit: Limit = 10) -> ListPage[views.SessionOut]:
    data, total = await views.list_sessions(session, (caller.require_user(), None, False), offset, limit)
    return ListPage(data=data, total=total)


@routes.get("/me/sessions/{session_id}")
async def my_session(session_id: PathId, caller: Caller, session: Session, keeper: ConversationsDep) -> views.SessionDetail:
    return await views.get_session(session, keeper, (caller.require_user(), None, False), session_id)


@routes.delete("/me/sessions/{session_id}", status_code=204)
async def delete_my_session(session_id: PathId, caller: Caller, session: Session) -> Response:
    await views.delete_session(session, (caller.require_user(), None, False), session_id)
    return Response(status_code=204)


def _admin_scope(caller: Caller) -> views.Scope:
    # The master key sees every session; an administrator those of their organization's users.
    return None, caller.organization_id, caller.user_id is None


@routes.get("/admin/sessions", dependencies=[Depends(require_admin)])
async def sessions(
    caller: Caller, session: Session, user: QueryId = None, offset: Offset = 0, limit: Limit = 10
) -> ListPage[views.SessionOut]:
    data, total = await views.list_sessions(session, _admin_scope(caller), offset, limit, user=user)
    return ListPage(data=data, total=total)


@routes.get("/admin/sessions/{session_id}", dependencies=[Depends(require_admin)])
async def admin_session(session_id: PathId, caller: Caller, session: Session, keeper: ConversationsDep) -> views.SessionDetail:
    return await views.get_session(session, keeper, _admin_scope(caller), session_id)


@routes.delete("/admin/sessions/{session_id}", status_code=204, dependencies=[Depends(require_admin)])
async def delete_session(session_id: PathId, caller: Caller, session: Session) -> Response:
    await views.delete_session(session, _admin_scope(caller), session_id)
    return Response(status_code=204)
