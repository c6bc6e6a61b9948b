"""Reading and deleting conversation records: a user their own, an administrator those of the
users of their organization (the master key: every one)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.common.schemas import to_unix
from api.conversations.keeper import ConversationKeeper
from api.db.tables import ConversationSession, ConversationTurn
from api.errors import NotFoundError


class TurnOut(BaseModel):
    object: Literal["conversation.turn"] = "conversation.turn"
    id: int
    thread: int
    request_id: str
    endpoint: str
    model: str | None
    request: dict[str, Any]
    answer: dict[str, Any] | None
    created: int


class SessionOut(BaseModel):
    object: Literal["conversation.session"] = "conversation.session"
    id: int
    user: int
    name: str | None
    threads: int
    turns: int
    created: int
    updated: int


class SessionDetail(SessionOut):
    data: list[TurnOut]


Scope = tuple[int | None, int | None, bool]  # (user, organization, everyone): whose sessions the caller sees


def _visible(query: Select[Any], scope: Scope) -> Select[Any]:
    user, organization, everyone = scope
    if everyone:
        return query
    if user is not None:
        return query.where(ConversationSession.user_id == user)
    return query.where(ConversationSession.organization_id == organization) if organization is not None else query.where(False)


_threads = func.count(func.distinct(ConversationTurn.thread))


async def list_sessions(db: AsyncSession, scope: Scope, offset: int, limit: int, user: int | None = None) -> tuple[list[SessionOut], int]:
    base = _visible(select(ConversationSession), scope)
    if user is not None:
        base = base.where(ConversationSession.user_id == user)
    total = (await db.execute(select(func.count()).select_from(base.subquery()))).scalar_one()
    rows = (await db.execute(
        _visible(select(ConversationSession, _threads, func.count(ConversationTurn.id)), scope)
        .where(*([ConversationSession.user_id == user] if user is not None else []))
        .outerjoin(ConversationTurn).group_by(ConversationSession.id)
        .order_by(ConversationSession.updated.desc(), ConversationSession.id.desc()).offset(offset).limit(limit)
    )).all()
    return [_session_out(session, threads, turns) for session, threads, turns in rows], total


def _session_out(session: ConversationSession, threads: int, turns: int) -> SessionOut:
    return SessionOut(id=session.id, user=session.user_id, name=session.name, threads=threads, turns=turns,
                      created=to_unix(session.created), updated=to_unix(session.updated))


async def _session(db: AsyncSession, scope: Scope, session_id: int) -> ConversationSession:
    found = (await db.execute(_visible(select(ConversationSession).where(ConversationSession.id == session_id), scope))).scalar()
    if found is None:
        raise NotFoundError(f"Session {session_id} not found")
    return found


async def get_session(db: AsyncSession, keeper: ConversationKeeper, scope: Scope, session_id: int) -> SessionDetail:
    session = await _session(db, scope, session_id)
    turns = (await db.execute(select(ConversationTurn).where(ConversationTurn.session_id == session.id)
                              .order_by(ConversationTurn.id))).scalars().all()
    data = [TurnOut(id=t.id, thread=t.thread, request_id=t.request_id, endpoint=t.endpoint, model=t.model,
                    request=keeper.open(t.request), answer=keeper.open(t.answer), created=to_unix(t.created)) for t in turns]
    return SessionDetail(**_session_out(session, len({t.thread for t in turns}), len(turns)).model_dump(), data=data)


async def delete_session(db: AsyncSession, scope: Scope, session_id: int) -> None:
    await db.delete(await _session(db, scope, session_id))
    await db.commit()
