"""Organizations: the tenants users belong to."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.common.db import commit_or_conflict
from api.common.listing import PageRequest, fetch_page
from api.common.schemas import to_unix
from api.db.tables import Organization, User
from api.errors import ConflictError, NotFoundError
from api.identity.schemas import OrganizationCreate, OrganizationOut, OrganizationUpdate

ORDER_COLUMNS = {"id": Organization.id, "name": Organization.name, "created": Organization.created, "updated": Organization.updated}

_user_count = (
    select(func.count(User.id)).where(User.organization_id == Organization.id).correlate(Organization).scalar_subquery()
)


def _out(organization: Organization, users: int) -> OrganizationOut:
    return OrganizationOut(
        id=organization.id, name=organization.name, users=users,
        created=to_unix(organization.created), updated=to_unix(organization.updated),
    )


async def _get(session: AsyncSession, organization_id: int) -> Organization:
    organization = await session.get(Organization, organization_id)
    if organization is None:
        raise NotFoundError(f"Organization {organization_id} not found")
    return organization


async def create_organization(session: AsyncSession, body: OrganizationCreate) -> int:
    organization = Organization(name=body.name)
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


async def update_organization(session: AsyncSession, organization_id: int, body: OrganizationUpdate) -> None:
    organization = await _get(session, organization_id)
    if body.name is not None:
        organization.name = body.name
    await commit_or_conflict(session, f"An organization named '{organization.name}' already exists")


async def delete_organization(session: AsyncSession, organization_id: int) -> None:
    organization = await _get(session, organization_id)
    users = (await session.execute(select(func.count(User.id)).where(User.organization_id == organization_id))).scalar_one()
    if users:
        raise ConflictError(f"Organization {organization_id} still has {users} user(s): move or delete them first")
    await session.delete(organization)
    # A user may have joined it meanwhile.
    await commit_or_conflict(session, f"Organization {organization_id} is still in use")
