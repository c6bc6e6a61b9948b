"""The daily roll-ups (`usage_daily`): what a batch of usage records adds to them, and the
upsert that adds it, on SQLite and PostgreSQL alike (both speak INSERT ... ON CONFLICT)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC
from operator import add
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from api.db.tables import UsageDaily
from api.usage.records import UsageRecord

# A record counts once in each dimension; a report reads one dimension only.
DIMENSIONS = ("user", "key", "organization", "router")
KEY = ("dimension", "day", "group_id", "tag")
SUMS = ("requests", "errors", "prompt_tokens", "completion_tokens", "cost_nanos",
        "kwh_min", "kwh_max", "kgco2eq_min", "kgco2eq_max")

_TABLE = UsageDaily.__table__


def _upsert(insert: Any) -> Any:
    statement = insert(_TABLE)
    return statement.on_conflict_do_update(
        index_elements=list(KEY),
        set_={name: _TABLE.c[name] + statement.excluded[name] for name in SUMS},
    )


_UPSERTS = {"sqlite": _upsert(sqlite.insert), "postgresql": _upsert(postgresql.insert)}


def daily_sums(records: Iterable[UsageRecord]) -> list[dict[str, Any]]:
    """One row per (dimension, day, group, tag) the records touch, with their sums; sorted, so
    that writers of several processes lock the rows they share in one order (no deadlock).

    Summed first per (day, user, key, organisation, router, tag): a batch holds few of those
    (one caller's calls, mostly), so each record costs one lookup, not one per dimension."""
    calls: dict[tuple[Any, ...], list[Any]] = {}
    for r in records:
        key = (r.created.astimezone(UTC).date(), r.user_id or 0, r.key_id or 0, r.organization_id or 0,
               r.router_id or 0, r.tag or "")
        values = (1, 1 if r.status >= 400 else 0, r.prompt_tokens, r.completion_tokens, r.cost_nanos,
                  r.kwh_min, r.kwh_max, r.kgco2eq_min, r.kgco2eq_max)
        _add(calls, key, values)
    sums: dict[tuple[Any, ...], list[Any]] = {}
    for (day, *groups, tag), values in calls.items():
        for dimension, group_id in zip(DIMENSIONS, groups, strict=True):
            _add(sums, (dimension, day, group_id, tag), values)
    return [dict(zip(KEY, key, strict=True)) | dict(zip(SUMS, sums[key], strict=True)) for key in sorted(sums)]


async def add_to_rollups(connection: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Add `rows` (from `daily_sums`) to the roll-ups, in the caller's transaction."""
    if rows:
        await connection.execute(_UPSERTS[connection.dialect.name], rows)


def _add(totals: dict[tuple[Any, ...], list[Any]], key: tuple[Any, ...], values: Sequence[Any]) -> None:
    """Add `values` to the running sums under `key`, column by column."""
    row = totals.get(key)
    totals[key] = list(values) if row is None else list(map(add, row, values))  # in C: every record, every column
