"""Changes to keys, users and roles, signalled to every process through the database.

Each process caches the keys it resolves (`Authenticator`). A change made through one process
clears that process's cache at once; the others learn of it from a token in the database that
every change replaces, in the change's own transaction: committed with it, or not at all.
Each process reads the token every half of `auth_cache_ttl_seconds`: one small query per
process, whatever the number of keys, where re-reading each key once its cache entry expired
cost a query on the request path of every key used less than once a second.
"""

from __future__ import annotations

import secrets

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from api.db.base import utcnow
from api.db.tables import IdentityChange

_ROW = 1


async def mark_changed(session: AsyncSession) -> None:
    """Replace the token within `session`'s transaction (the caller commits). One upsert, so
    changes made at the same time in several processes never clash on the row. The change's
    own pending writes are not flushed here: their conflicts surface at the caller's commit,
    where it turns them into 409s."""
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    values = {"token": secrets.token_hex(16), "changed": utcnow()}
    upsert = dialect.insert(IdentityChange).values(id=_ROW, **values)
    with session.no_autoflush:
        await session.execute(upsert.on_conflict_do_update(index_elements=[IdentityChange.id], set_=values))


async def current_token(session: AsyncSession) -> str | None:
    """The token of the last change, None before the first."""
    return (await session.execute(select(IdentityChange.token).where(IdentityChange.id == _ROW))).scalar()
