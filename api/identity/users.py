"""Users: who may call the gateway, under which role and organization, with which budget."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from api.identity.authenticator import Authenticator
from api.common.listing import PageRequest, fetch_page
from api.common.periods import budget_fields, period_start, utc_now
from api.common.schemas import from_unix, to_unix
from api.db.base import utcnow
from api.db.tables import Organization, Role, User
from api.errors import ConflictError, InvalidRequestError, NotFoundError
from api.identity.changes import mark_changed
from api.identity.secrets import PasswordHasher
from api.identity.schemas import UserCreate, UserOut, UserUpdate

ORDER_COLUMNS = {"id": User.id, "name": User.name, "created": User.created, "updated": User.updated}

NANOS = Decimal(1_000_000_000)


def budget_to_nanos(budget: Decimal | None) -> int | None:
    return None if budget is None else int(budget * NANOS)


def nanos_to_budget(nanos: int | None) -> float | None:
    return None if nanos is None else float(Decimal(nanos) / NANOS)


def user_out(user: User) -> UserOut:
    return UserOut(
        id=user.id, email=user.email, name=user.name, role=user.role_id, organization=user.organization_id,
        expires=to_unix(user.expires), priority=user.priority, created=to_unix(user.created), updated=to_unix(user.updated),
        **budget_fields(user.budget_nanos, user.allowance_nanos, user.budget_period, user.period_start),
    )


async def get_user_model(session: AsyncSession, user_id: int) -> User:
    user = await session.get(User, user_id)
    if user is None:
        raise NotFoundError(f"User {user_id} not found")
    return user


async def _check_references(session: AsyncSession, role_id: int | None, organization_id: int | None) -> None:
    if role_id is not None and await session.get(Role, role_id) is None:
        raise NotFoundError(f"Role {role_id} not found")
    if organization_id is not None and await session.get(Organization, organization_id) is None:
        raise NotFoundError(f"Organization {organization_id} not found")


async def commit_unique_email(
    session: AsyncSession, email: str, commit: Callable[[AsyncSession], Awaitable[None]] | None = None
) -> None:
    """`commit`: how to commit, when the change reaches beyond the database (a live balance)."""
    try:
        await (session.commit() if commit is None else commit(session))
    except IntegrityError as exc:
        await session.rollback()
        # Either the email was taken meanwhile, or the role/organization was deleted meanwhile.
        if (await session.execute(select(User.id).where(User.email == email))).first():
            raise ConflictError(f"A user with email '{email}' already exists") from exc
        raise ConflictError("The user's role or organization was changed at the same time; retry") from exc


async def create_user(session: AsyncSession, hasher: PasswordHasher, body: UserCreate) -> int:
    await _check_references(session, body.role, body.organization)
    user = User(
        email=body.email, name=body.name, password_hash=await hasher.hash(body.password), role_id=body.role,
        organization_id=body.organization, budget_nanos=budget_to_nanos(body.budget),
        allowance_nanos=budget_to_nanos(body.budget) if body.budget_period else None, budget_period=body.budget_period,
        period_start=period_start(body.budget_period, utc_now()) if body.budget_period else None,
        expires=from_unix(body.expires), priority=body.priority,
    )
    session.add(user)
    await commit_unique_email(session, body.email)
    return user.id


async def get_user(session: AsyncSession, user_id: int) -> UserOut:
    return user_out(await get_user_model(session, user_id))


async def list_users(
    session: AsyncSession,
    page: PageRequest,
    role_id: int | None = None,
    organization_id: int | None = None,
    email: str | None = None,
) -> tuple[list[UserOut], int]:
    query = select(User)
    if role_id is not None:
        query = query.where(User.role_id == role_id)
    if organization_id is not None:
        query = query.where(User.organization_id == organization_id)
    if email is not None:
        query = query.where(User.email == email.strip().lower())
    rows, total = await fetch_page(session, query, ORDER_COLUMNS[page.order_by], User.id, page)
    return [user_out(row[0]) for row in rows], total


async def update_user(
    session: AsyncSession, hasher: PasswordHasher, authenticator: Authenticator, user_id: int, body: UserUpdate,
    commit: Callable[[AsyncSession], Awaitable[None]] | None = None,
) -> bool:
    """Apply the fields present in `body` (committed by `commit` if given). Returns whether the
    password changed."""
    user = await get_user_model(session, user_id)
    # OpenGateLLM's body carries it: an administrator needs no current password to set a new one,
    # but one who gives it is told when it is wrong, and nothing changes.
    if body.current_password is not None and not await hasher.verify(body.current_password, user.password_hash):
        raise InvalidRequestError("current_password is incorrect")
    changes = body.model_dump(exclude_unset=True, exclude={"current_password"})
    await _check_references(session, changes.get("role"), changes.get("organization"))
    if "email" in changes:
        user.email = body.email  # type: ignore[assignment]  # validated non-null
    if "name" in changes:
        user.name = body.name
    if "password" in changes:
        user.password_hash = await hasher.hash(body.password)  # type: ignore[arg-type]
    if "role" in changes:
        user.role_id = body.role  # type: ignore[assignment]
    if "organization" in changes:
        user.organization_id = body.organization
    # A budget is set by the caller (api.quota.ledger.set_budget): the ledger and the live balance.
    if "expires" in changes:
        user.expires = from_unix(body.expires)
    if "priority" in changes:
        user.priority = body.priority  # type: ignore[assignment]
    user.updated = utcnow()
    await mark_changed(session)
    await commit_unique_email(session, user.email, commit)
    authenticator.forget_user(user_id)
    return "password" in changes


async def delete_user(session: AsyncSession, authenticator: Authenticator, user_id: int) -> None:
    user = await get_user_model(session, user_id)
    await session.delete(user)
    await mark_changed(session)
    await session.commit()
    authenticator.forget_user(user_id)
