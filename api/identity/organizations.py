"""Organizations: the tenants users belong to, with a budget their users draw on together and
the models they may use."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.common.db import commit_or_conflict
from api.common.listing import PageRequest, fetch_page
from api.common.periods import budget_fields, period_start, utc_now
from api.common.schemas import to_unix
from api.db.tables import Organization, User
from api.errors import ConflictError, InvalidRequestError, NotFoundError
from api.identity.authenticator import Authenticator
from api.identity.changes import mark_changed
from api.identity.users import budget_to_nanos
from api.identity.schemas import OrganizationCreate, OrganizationOut, OrganizationUpdate

ORDER_COLUMNS = {"id": Organization.id, "name": Organization.name, "created": Organization.created, "updated": Organization.updated}

_user_count = (
    select(func.count(User.id)).where(User.organization_id == Organization.id).correlate(Organization).scalar_subquery()
)


def _out(organization: Organization, users: int) -> OrganizationOut:
    return OrganizationOut(
        id=organization.id, name=organization.name, users=users, models=organization.models,
        keep_conversations=organization.keep_conversations,
        created=to_unix(organization.created), updated=to_unix(organization.updated),
        **budget_fields(organization.budget_nanos, organization.allowance_nanos, organization.budget_period,
                        organization.period_start),
    )


async def get_organization_model(session: AsyncSession, organization_id: int) -> Organization:
    return await _get(session, organization_id)


async def _get(session: AsyncSession, organization_id: int) -> Organization:
    organization = await session.get(Organization, organization_id)
    if organization is None:
        raise NotFoundError(f"Organization {organization_id} not found")
    return organization


async def create_organization(session: AsyncSession, body: OrganizationCreate) -> int:
    if body.budget_period is not None and body.budget is None:
        raise InvalidRequestError("budget_period needs a budget")
    budget = budget_to_nanos(body.budget)
    organization = Organization(name=body.name, budget_nanos=budget, models=body.models,
                                keep_conversations=body.keep_conversations)
    if body.budget_period is not None:
        organization.allowance_nanos, organization.budget_period = budget, body.budget_period
        organization.period_start = period_start(body.budget_period, utc_now())
    session.add(organization)
    await commit_or_conflict(session, f"An organization named '{body.name}' already exists")
    return organization.id


async def get_organization(session: AsyncSession, organization_id: int) -> OrganizationOut:
    row = (await session.execute(select(Organization, _user_count).where(Organization.id == organization_id))).first()
    if row is None:
        raise NotFoundError(f"Organization {organization_id} not found")
    return _out(*row)


async def list_organizations(session: AsyncSession, page: PageRequest) -> tuple[list[OrganizationOut], int]:
    rows, total = await fetch_page(
        session, select(Organization, _user_count), ORDER_COLUMNS[page.order_by], Organization.id, page
    )
    return [_out(*row) for row in rows], total


async def update_organization(
    session: AsyncSession, authenticator: Authenticator, organization_id: int, body: OrganizationUpdate,
    commit: Callable[[AsyncSession], Awaitable[None]] | None = None,
) -> None:
    """Apply the fields present in `body` (the budget is the caller's: api.quota.ledger);
    committed by `commit` if given."""
    organization = await _get(session, organization_id)
    if body.name is not None:
        organization.name = body.name
    if "models" in body.model_fields_set:
        organization.models = body.models
    if body.keep_conversations is not None:
        organization.keep_conversations = body.keep_conversations
    await mark_changed(session)
    await commit_or_conflict(session, f"An organization named '{organization.name}' already exists", commit)
    # Its users' cached keys carry its budget and models.
    authenticator.forget_all()


async def delete_organization(session: AsyncSession, organization_id: int) -> None:
    organization = await _get(session, organization_id)
    users = (await session.execute(select(func.count(User.id)).where(User.organization_id == organization_id))).scalar_one()
    if users:
        raise ConflictError(f"Organization {organization_id} still has {users} user(s): move or delete them first")
    await session.delete(organization)
    # A user may have joined it meanwhile.
    await commit_or_conflict(session, f"Organization {organization_id} is still in use")
