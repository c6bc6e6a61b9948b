"""Administrators' budget changes, each written to the ledger and applied to the live balance.

The live balance (Redis) is changed before the database commits, and changed back if the
commit fails: an answer of 503 (Redis or the database unreachable) means nothing was changed,
so a retry can never apply a change twice. A retry that did not see the first answer is safe
with an Idempotency-Key (`api.quota.idempotency`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.identity.authenticator import Authenticator
from api.common.schemas import to_unix
from api.db.tables import BudgetChange, User
from api.errors import InvalidRequestError
from api.identity.schemas import BudgetChangeOut
from api.identity.users import budget_to_nanos, get_user_model, nanos_to_budget
from api.quota.balances import BudgetStore
from api.quota.idempotency import IdempotencyKey, earlier_answer, remember

logger = logging.getLogger(__name__)

MAX_NANOS = 10**18

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


def live_budget_set(budgets: BudgetStore, user_id: int, before: int | None, after: int | None) -> Commit:
    return commit_with_live_change(lambda: budgets.set_budget(user_id, after), lambda: budgets.set_budget(user_id, before))


async def record_set(session: AsyncSession, user_id: int, actor: int | None, budget_nanos: int | None) -> None:
    """Note an absolute change made through PATCH (the caller commits)."""
    session.add(BudgetChange(user_id=user_id, actor_user_id=actor, kind="set", amount_nanos=budget_nanos,
                             balance_nanos=budget_nanos, reason=None))


async def recharge(
    session: AsyncSession, budgets: BudgetStore, authenticator: Authenticator, user_id: int, actor: int | None,
    amount: Decimal, reason: str | None, idempotency: IdempotencyKey | None = None,
) -> int:
    """Add `amount` (negative: take back) to a budgeted user's budget. Returns the ledger id (the
    first one, for a retry of a change already made with the same Idempotency-Key)."""
    if idempotency is not None and (earlier := await earlier_answer(session, idempotency)) is not None:
        return int(earlier.body["id"])
    user = await session.get(User, user_id, with_for_update=True)
    if user is None:
        await get_user_model(session, user_id)  # raises the 404
    assert user is not None
    if user.budget_nanos is None:
        raise InvalidRequestError(f"User {user_id} has no budget (unlimited): set one with PATCH first")
    delta = budget_to_nanos(amount)
    assert delta is not None
    if not -MAX_NANOS < user.budget_nanos + delta < MAX_NANOS:
        raise InvalidRequestError("The budget would leave the representable range")
    user.budget_nanos += delta
    change = BudgetChange(user_id=user_id, actor_user_id=actor, kind="recharge", amount_nanos=delta,
                          balance_nanos=user.budget_nanos, reason=reason)
    session.add(change)
    await session.flush()
    if idempotency is not None:
        await remember(session, idempotency, 201, {"id": change.id})
    commit = commit_with_live_change(lambda: budgets.add(user_id, delta), lambda: budgets.add(user_id, -delta))
    try:
        await commit(session)
    except IntegrityError:
        # The same key, sent twice at once: the other request made the change.
        await session.rollback()
        if idempotency is not None and (earlier := await earlier_answer(session, idempotency)) is not None:
            return int(earlier.body["id"])
        raise
    authenticator.forget_user(user_id)
    return change.id


async def history(session: AsyncSession, user_id: int, offset: int, limit: int) -> tuple[list[BudgetChangeOut], int]:
    await get_user_model(session, user_id)
    total = (await session.execute(select(func.count(BudgetChange.id)).where(BudgetChange.user_id == user_id))).scalar_one()
    rows = (
        await session.execute(
            select(BudgetChange).where(BudgetChange.user_id == user_id)
            .order_by(BudgetChange.created.desc(), BudgetChange.id.desc()).offset(offset).limit(limit)
        )
    ).scalars()
    return [
        BudgetChangeOut(id=c.id, user=c.user_id, actor=c.actor_user_id, kind=c.kind, amount=nanos_to_budget(c.amount_nanos),
                        budget=nanos_to_budget(c.balance_nanos), reason=c.reason, created=to_unix(c.created))
        for c in rows
    ], total


async def budget_of(session_factory: async_sessionmaker[AsyncSession], user_id: int) -> int | None:
    """The user's budget in the database now (nanos; None: unlimited). A user deleted meanwhile
    has nothing to spend. A database that cannot be reached is the model endpoints' 503, as
    any other read of theirs (made so by the call pipeline, `api.calls.pipeline`)."""
    async with session_factory() as session:
        row = (await session.execute(select(User.budget_nanos).where(User.id == user_id))).first()
    return 0 if row is None else row[0]
