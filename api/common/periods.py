"""Periods of an allowance: a UTC day, an ISO week (from Monday) or a calendar month.

An allowance resets at the start of each period without anything running at that instant: the
first call of a period finds no live balance for it (its name carries the period's start) and
loads one, resetting the database's (`api.quota.ledger.live_budget`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum


def utc_now() -> datetime:
    """The time periods are reckoned in (tests move it: `monkeypatch` this function)."""
    return datetime.now(UTC)


class Period(StrEnum):
    day = "day"
    week = "week"
    month = "month"


def period_start(period: str, now: datetime) -> datetime:
    day = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == Period.day:
        return day
    if period == Period.week:
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def next_start(period: str, now: datetime) -> datetime:
    start = period_start(period, now)
    if period == Period.day:
        return start + timedelta(days=1)
    if period == Period.week:
        return start + timedelta(days=7)
    return (start + timedelta(days=32)).replace(day=1)


def label(start: datetime) -> str:
    """A period's start as it names the period's live balance."""
    return start.strftime("%Y%m%d")


def budget_fields(budget_nanos: int | None, allowance_nanos: int | None, period: str | None,
                  started: datetime | None, now: datetime | None = None) -> dict[str, object]:
    """A budget's fields in an API answer (`BudgetOut`), from its database columns."""
    if period is None or allowance_nanos is None:
        return {"budget": _units(budget_nanos), "budget_period": None, "budget_remaining": _units(budget_nanos),
                "budget_resets_at": None}
    now = now or utc_now()
    current = period_start(period, now)
    # A period that ended without a call has not been reset in the database yet: it will be.
    remaining = budget_nanos if started is not None and started >= current else allowance_nanos
    return {"budget": _units(allowance_nanos), "budget_period": period, "budget_remaining": _units(remaining),
            "budget_resets_at": int(next_start(period, now).timestamp())}


def _units(nanos: int | None) -> float | None:
    return None if nanos is None else float(Decimal(nanos) / 1_000_000_000)
