"""Changes to keys, users and roles, signalled to every process through the database.

Each process caches the keys it resolves (`Authenticator`). A change made through one process
clears that process's cache at once; the others learn of it from a token in the database that
every change replaces. Each process reads the token every half of `auth_cache_ttl_seconds`:
one small query per process, whatever the number of keys, where re-reading each key once its
cache entry expired cost a query on the request path of every key used less than once a
second.
"""

from __future__ import annotations

import secrets

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.db.models import IdentityChange

_ROW = 1


class IdentityChanges:
    def __init__(self, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self._session_factory = session_factory

    async def signal(self) -> None:
        """Tell every process that keys, users or roles changed (after the change committed)."""
        token = secrets.token_hex(16)
        async with self._session_factory() as session:
            replaced = await session.execute(update(IdentityChange).where(IdentityChange.id == _ROW).values(token=token))
            if replaced.rowcount == 0:  # type: ignore[attr-defined]
                session.add(IdentityChange(id=_ROW, token=token))
            try:
                await session.commit()
            except IntegrityError:  # another process made the row meanwhile: replace its token
                await session.rollback()
                await session.execute(update(IdentityChange).where(IdentityChange.id == _ROW).values(token=token))
                await session.commit()

    async def current(self) -> str | None:
        """The token of the last change, None before the first."""
        async with self._session_factory() as session:
            return (await session.execute(select(IdentityChange.token).where(IdentityChange.id == _ROW))).scalar()
