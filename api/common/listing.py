"""Offset pagination with a total, shared by every list endpoint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from api.common.schemas import OrderDirection


@dataclass(frozen=True)
class PageRequest:
    offset: int = 0
    limit: int = 10
    order_by: str = "id"
    order_direction: OrderDirection = OrderDirection.asc


async def fetch_page(
    session: AsyncSession,
    query: Select[Any],
    order_column: ColumnElement[Any],
    tiebreak_column: ColumnElement[Any],
    page: PageRequest,
) -> tuple[list[Any], int]:
    """Run `query` for one page, in a stable order, and count every row it matches."""
    total = (await session.execute(select(func.count()).select_from(query.order_by(None).subquery()))).scalar_one()
    if page.order_direction is OrderDirection.desc:
        ordered = query.order_by(order_column.desc(), tiebreak_column.desc())
    else:
        ordered = query.order_by(order_column.asc(), tiebreak_column.asc())
    result = await session.execute(ordered.offset(page.offset).limit(page.limit))
    return list(result.all()), total
