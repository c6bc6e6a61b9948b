"""Where conversation turns are written, grouped and purged.

A turn joins a session: the one the client names (`metadata.session` in the request), else
the session of the call it continues, else a new one. It continues a call when its messages
are that call's messages and answer, plus what comes next: each turn keeps a hash of the
history it leads to (messages and answer, by role and text), and a new chat call looks up the
hash of its messages but the last. Threads are numbered within a session: a call that
continues none starts a new one.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.catalog.crypto import SecretBox
from api.common import periods
from api.db.tables import ConversationSession, ConversationTurn

logger = logging.getLogger("tollgate.conversations")


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict) and isinstance(part.get("text"), str))
    return ""


def history_hash(messages: list[Any]) -> str:
    """A history by role and text: what a client sends back of it, whatever else it adds."""
    pairs = [[m.get("role"), _text(m.get("content"))] for m in messages if isinstance(m, dict)]
    return hashlib.sha256(json.dumps(pairs, separators=(",", ":")).encode()).hexdigest()


class ConversationKeeper:
    def __init__(self, session_factory: async_sessionmaker[AsyncSession], secrets: SecretBox, retention_days: int) -> None:
        self._session_factory = session_factory
        self._secrets = secrets
        self.retention_days = retention_days

    async def keep(
        self, user_id: int, organization_id: int | None, request_id: str, endpoint: str, model: str | None,
        request: dict[str, Any], answer: dict[str, Any] | None, session_name: str | None,
    ) -> None:
        messages = request.get("messages") if isinstance(request.get("messages"), list) else None
        continues = history_hash(messages[:-1]) if messages and len(messages) > 1 else None
        leads_to = None
        if messages is not None and answer is not None:
            reply = ((answer.get("choices") or [{}])[0] or {}).get("message")
            if isinstance(reply, dict):
                leads_to = history_hash([*messages, reply])
        async with self._session_factory() as db:
            previous = None
            if continues is not None:
                previous = (await db.execute(
                    select(ConversationTurn.session_id, ConversationTurn.thread).join(ConversationSession)
                    .where(ConversationSession.user_id == user_id, ConversationTurn.leads_to == continues)
                    .order_by(ConversationTurn.id.desc()).limit(1)
                )).first()
            session = await self._session_for(db, user_id, organization_id, session_name, previous)
            if previous is not None and previous.session_id == session.id:
                thread = previous.thread
            else:
                last = (await db.execute(select(func.max(ConversationTurn.thread))
                                         .where(ConversationTurn.session_id == session.id))).scalar_one()
                thread = (last or 0) + 1
            db.add(ConversationTurn(
                session_id=session.id, thread=thread, request_id=request_id, endpoint=endpoint, model=model,
                request=self._secrets.encrypt(json.dumps(request)),
                answer=self._secrets.encrypt(json.dumps(answer)) if answer is not None else None, leads_to=leads_to,
                created=periods.utc_now(),
            ))
            session.updated = periods.utc_now()
            await db.commit()

    async def _session_for(self, db: AsyncSession, user_id: int, organization_id: int | None, name: str | None,
                           previous: Any) -> ConversationSession:
        if name is not None:
            found = (await db.execute(select(ConversationSession).where(
                ConversationSession.user_id == user_id, ConversationSession.name == name))).scalars().first()
        elif previous is not None:
            found = await db.get(ConversationSession, previous.session_id)
        else:
            found = None
        if found is None:
            now = periods.utc_now()
            found = ConversationSession(user_id=user_id, organization_id=organization_id, name=name, created=now, updated=now)
            db.add(found)
            await db.flush()
        return found

    def open(self, sealed: str | None) -> Any:
        return None if sealed is None else json.loads(self._secrets.decrypt(sealed) or "null")

    async def purge(self) -> int:
        """Delete the turns older than the retention period, then the sessions left empty."""
        cutoff = periods.utc_now() - timedelta(days=self.retention_days)
        async with self._session_factory() as db:
            deleted = (await db.execute(delete(ConversationTurn).where(ConversationTurn.created < cutoff))).rowcount
            await db.execute(delete(ConversationSession).where(
                ~select(ConversationTurn.id).where(ConversationTurn.session_id == ConversationSession.id).exists()))
            await db.commit()
        return deleted or 0
