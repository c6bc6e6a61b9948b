"""Budget changes of users, keys and organisations, each written to the ledger and applied to
the live balance.

The live balance (Redis) is changed before the database commits, and changed back if the
commit fails: an answer of 503 (Redis or the database unreachable) means nothing was changed,
so a retry can never apply a change twice. A retry that did not see the first answer is safe
with an Idempotency-Key (`api.quota.idempotency`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from decimal import Decimal

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.common.schemas import to_unix
from api.db.tables import ApiKey, BudgetChange, Organization, User
from api.errors import InvalidRequestError, NotFoundError
from api.identity.principal import Budget
from api.identity.schemas import BudgetChangeOut
from api.identity.users import budget_to_nanos, nanos_to_budget
from api.quota.balances import BudgetStore, account_slot
from api.quota.idempotency import IdempotencyKey, earlier_answer, remember
from api.common import periods
from api.common.periods import label, period_start

logger = logging.getLogger(__name__)

MAX_NANOS = 10**18

Holder = User | ApiKey | Organization
HOLDER_TABLES: dict[str, type[User] | type[ApiKey] | type[Organization]] = {
    "user": User, "key": ApiKey, "organization": Organization,
}
_LEDGER_COLUMN = {"user": "user_id", "key": "key_id", "organization": "organization_id"}
_NAMES = {"user": "User", "key": "Key", "organization": "Organization"}

Commit = Callable[[AsyncSession], Awaitable[None]]


def commit_with_live_change(apply: Callable[[], Awaitable[None]], undo: Callable[[], Awaitable[None]]) -> Commit:
    """A commit that changes the live balance first and changes it back if the commit fails."""

    async def commit(session: AsyncSession) -> None:
        await session.flush()  # a conflict (a key used at the same time) surfaces before Redis is touched
        await apply()
        try:
            await session.commit()
        except BaseException:
            try:
                await undo()
            except Exception:  # noqa: BLE001 - the commit's own error is the one to answer with
                logger.exception("a budget change was not committed and its live balance could not be changed back")
            raise

    return commit


def live_slot(holder: str, row: Holder) -> str:
    """The live balance `row`'s budget is in now: for an allowance, its current period's."""
    period = label(row.period_start) if row.budget_period is not None and row.period_start is not None else None
    return account_slot(holder, row.id, period)


def set_budget(session: AsyncSession, budgets: BudgetStore, holder: str, row: Holder, actor: int | None,
               amount_nanos: int | None, period: str | None, now: datetime | None = None) -> Commit:
    """Give `row` a one-off budget of `amount_nanos` (None: unlimited), or with `period` an
    allowance of `amount_nanos` per period, starting with the current one in full. Noted in
    the ledger; returns the commit that applies it to the live balance too."""
    if period is not None and amount_nanos is None:
        raise InvalidRequestError("A budget period needs a budget amount")
    before_slot, before = live_slot(holder, row), row.budget_nanos
    row.budget_nanos = amount_nanos
    row.allowance_nanos = amount_nanos if period is not None else None
    row.budget_period = period
    row.period_start = period_start(period, now or periods.utc_now()) if period is not None else None
    after_slot = live_slot(holder, row)
    session.add(BudgetChange(**{_LEDGER_COLUMN[holder]: row.id}, actor_user_id=actor, kind="set", amount_nanos=amount_nanos,
                             balance_nanos=amount_nanos, reason=f"per {period}" if period else None))

    async def apply() -> None:
        if before_slot != after_slot:
            await budgets.set_budget(before_slot, None)
        await budgets.set_budget(after_slot, amount_nanos)

    async def undo() -> None:
        if before_slot != after_slot:
            await budgets.set_budget(after_slot, None)
        await budgets.set_budget(before_slot, before)

    return commit_with_live_change(apply, undo)


def set_requested(session: AsyncSession, budgets: BudgetStore, holder: str, row: Holder, actor: int | None,
                  fields: set[str], budget: Decimal | None, period: str | None) -> Commit | None:
    """A PATCH's budget change, if it has one: `budget` and `budget_period` as sent; the one
    not sent stays as it is (the amount: the allowance, or what is left of a one-off budget)."""
    if not fields & {"budget", "budget_period"}:
        return None
    amount = budget_to_nanos(budget) if "budget" in fields else (
        row.allowance_nanos if row.budget_period is not None else row.budget_nanos)
    return set_budget(session, budgets, holder, row, actor, amount, period if "budget_period" in fields else row.budget_period)


async def live_remaining(budgets: BudgetStore, holder: str, holder_id: int, period: str | None) -> int | None:
    """What is left of a budget now, as admission sees it (calls in flight and not yet written
    included), if its live balance is loaded."""
    slot = account_slot(holder, holder_id, label(period_start(period, periods.utc_now())) if period else None)
    return await budgets.balance(slot)


async def holder_row(session: AsyncSession, holder: str, holder_id: int, for_update: bool = False) -> Holder:
    row = await session.get(HOLDER_TABLES[holder], holder_id, with_for_update=for_update)
    if row is None:
        raise NotFoundError(f"{_NAMES[holder]} {holder_id} not found")
    return row


async def recharge(
    session: AsyncSession, budgets: BudgetStore, holder: str, holder_id: int, actor: int | None,
    amount: Decimal, reason: str | None, idempotency: IdempotencyKey | None = None,
) -> int:
    """Add `amount` (negative: take back) to a budget; to an allowance, for its current period.
    Returns the ledger id (the first one, for a retry of a change already made with the same
    Idempotency-Key). The caller forgets the cached keys the change concerns."""
    if idempotency is not None and (earlier := await earlier_answer(session, idempotency)) is not None:
        return int(earlier.body["id"])
    row = await holder_row(session, holder, holder_id, for_update=True)
    if row.budget_nanos is None:
        raise InvalidRequestError(f"{_NAMES[holder]} {holder_id} has no budget (unlimited): set one first")
    _start_period_if_due(session, holder, row)
    delta = budget_to_nanos(amount)
    assert delta is not None
    if not -MAX_NANOS < row.budget_nanos + delta < MAX_NANOS:
        raise InvalidRequestError("The budget would leave the representable range")
    row.budget_nanos += delta
    change = BudgetChange(**{_LEDGER_COLUMN[holder]: holder_id}, actor_user_id=actor, kind="recharge", amount_nanos=delta,
                          balance_nanos=row.budget_nanos, reason=reason)
    session.add(change)
    await session.flush()
    if idempotency is not None:
        await remember(session, idempotency, 201, {"id": change.id})
    slot = live_slot(holder, row)
    commit = commit_with_live_change(lambda: budgets.add(slot, delta), lambda: budgets.add(slot, -delta))
    try:
        await commit(session)
    except IntegrityError:
        # The same key, sent twice at once: the other request made the change.
        await session.rollback()
        if idempotency is not None and (earlier := await earlier_answer(session, idempotency)) is not None:
            return int(earlier.body["id"])
        raise
    return change.id


def _start_period_if_due(session: AsyncSession, holder: str, row: Holder) -> None:
    """An allowance whose period ended starts its new one (as a call would, `budget_of`)."""
    if row.budget_period is None or row.allowance_nanos is None:
        return
    current = period_start(row.budget_period, periods.utc_now())
    if row.period_start is not None and row.period_start >= current:
        return
    row.budget_nanos, row.period_start = row.allowance_nanos, current
    session.add(BudgetChange(**{_LEDGER_COLUMN[holder]: row.id}, actor_user_id=None, kind="reset",
                             amount_nanos=row.allowance_nanos, balance_nanos=row.allowance_nanos,
                             reason=f"new {row.budget_period}"))


async def history(session: AsyncSession, holder: str, holder_id: int, offset: int, limit: int) -> tuple[list[BudgetChangeOut], int]:
    await holder_row(session, holder, holder_id)
    column = getattr(BudgetChange, _LEDGER_COLUMN[holder])
    total = (await session.execute(select(func.count(BudgetChange.id)).where(column == holder_id))).scalar_one()
    rows = (
        await session.execute(
            select(BudgetChange).where(column == holder_id)
            .order_by(BudgetChange.created.desc(), BudgetChange.id.desc()).offset(offset).limit(limit)
        )
    ).scalars()
    return [
        BudgetChangeOut(id=c.id, user=c.user_id, key=c.key_id, organization=c.organization_id, actor=c.actor_user_id,
                        kind=c.kind, amount=nanos_to_budget(c.amount_nanos), budget=nanos_to_budget(c.balance_nanos),
                        reason=c.reason, created=to_unix(c.created))
        for c in rows
    ], total


async def budget_of(session_factory: async_sessionmaker[AsyncSession], budget: Budget) -> int | None:
    """What is left of `budget` in the database now (nanos; None: it has none any more). For an
    allowance whose period has ended, the new period starts here: what is left is set back to
    the allowance, once (the update's condition makes every other replica's a no-op), and the
    ledger shows the reset. A holder deleted meanwhile has nothing to spend. A database that
    cannot be reached is the model endpoints' 503, as any other read of theirs (made so by the
    call pipeline, `api.calls.pipeline`)."""
    table = HOLDER_TABLES[budget.holder]
    async with session_factory() as session:
        row = (await session.execute(
            select(table.budget_nanos, table.allowance_nanos, table.budget_period, table.period_start)
            .where(table.id == budget.holder_id)
        )).first()
        if row is None:
            return 0
        left, allowance, period, started = row
        if period is None or allowance is None:
            return left
        current = period_start(period, periods.utc_now())
        if started is not None and started >= current:
            return left
        reset = await session.execute(
            update(table).where(table.id == budget.holder_id, table.budget_period == period,
                                (table.period_start.is_(None)) | (table.period_start < current))
            .values(budget_nanos=table.allowance_nanos, period_start=current)
        )
        if reset.rowcount:
            session.add(BudgetChange(**{_LEDGER_COLUMN[budget.holder]: budget.holder_id}, actor_user_id=None, kind="reset",
                                     amount_nanos=allowance, balance_nanos=allowance, reason=f"new {period}"))
        await session.commit()
        return (await session.execute(select(table.budget_nanos).where(table.id == budget.holder_id))).scalar_one_or_none()
