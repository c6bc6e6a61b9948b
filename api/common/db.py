"""Turning database constraint violations into clear 409s."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.errors import ConflictError


async def commit_or_conflict(
    session: AsyncSession, detail: str, commit: Callable[[AsyncSession], Awaitable[None]] | None = None
) -> None:
    """Commit (with `commit`, if the change reaches beyond the database); a constraint violation
    (a concurrent change won) becomes a 409 with `detail`."""
    try:
        await (session.commit() if commit is None else commit(session))
    except IntegrityError as exc:
        await session.rollback()
        raise ConflictError(detail) from exc


async def flush_or_conflict(session: AsyncSession, detail: str) -> None:
    try:
        await session.flush()
    except IntegrityError as exc:
        await session.rollback()
        raise ConflictError(detail) from exc
