"""Roles: a set of permissions and the limits on each router a role may reach."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.identity.authenticator import Authenticator
from api.common.db import commit_or_conflict, flush_or_conflict
from api.common.listing import PageRequest, fetch_page
from api.common.schemas import to_unix
from api.db.base import utcnow
from api.db.tables import Role, RoleLimit, User
from api.errors import ConflictError, NotFoundError
from api.identity.changes import mark_changed
from api.identity.schemas import Limit, Permission, RoleCreate, RoleOut, RoleUpdate

ORDER_COLUMNS = {"id": Role.id, "name": Role.name, "created": Role.created, "updated": Role.updated}

_user_count = select(func.count(User.id)).where(User.role_id == Role.id).correlate(Role).scalar_subquery()


def role_limits(role: Role) -> list[Limit]:
    return [Limit(router=limit.router_id, type=limit.type, value=limit.value) for limit in role.limits]


def role_permissions(role: Role) -> list[Permission]:
    return [Permission(p) for p in role.permissions if p in Permission.__members__]


def _out(role: Role, users: int) -> RoleOut:
    return RoleOut(
        id=role.id, name=role.name, permissions=role_permissions(role), limits=role_limits(role),
        keep_conversations=role.keep_conversations,
        users=users, created=to_unix(role.created), updated=to_unix(role.updated),
    )


def _limit_rows(limits: list[Limit]) -> list[RoleLimit]:
    return [RoleLimit(router_id=limit.router, type=limit.type.value, value=limit.value) for limit in limits]


async def get_role_model(session: AsyncSession, role_id: int) -> Role:
    role = await session.get(Role, role_id)
    if role is None:
        raise NotFoundError(f"Role {role_id} not found")
    return role


async def create_role(session: AsyncSession, body: RoleCreate) -> int:
    role = Role(name=body.name, permissions=[p.value for p in body.permissions], limits=_limit_rows(body.limits),
                keep_conversations=body.keep_conversations)
    session.add(role)
    await commit_or_conflict(session, f"A role named '{body.name}' already exists")
    return role.id


async def get_role(session: AsyncSession, role_id: int) -> RoleOut:
    row = (await session.execute(select(Role, _user_count).where(Role.id == role_id))).first()
    if row is None:
        raise NotFoundError(f"Role {role_id} not found")
    return _out(*row)


async def list_roles(session: AsyncSession, page: PageRequest) -> tuple[list[RoleOut], int]:
    rows, total = await fetch_page(session, select(Role, _user_count), ORDER_COLUMNS[page.order_by], Role.id, page)
    return [_out(*row) for row in rows], total


async def update_role(session: AsyncSession, authenticator: Authenticator, role_id: int, body: RoleUpdate) -> None:
    # Row lock (PostgreSQL): concurrent updates of one role's limits queue instead of deadlocking.
    role = await session.get(Role, role_id, with_for_update=True, populate_existing=True)
    if role is None:
        raise NotFoundError(f"Role {role_id} not found")
    if body.name is not None and body.name != role.name:
        taken = (await session.execute(select(Role.id).where(Role.name == body.name))).first()
        if taken:
            raise ConflictError(f"A role named '{body.name}' already exists")
        role.name = body.name
    if body.permissions is not None:
        role.permissions = [p.value for p in body.permissions]
    if body.keep_conversations is not None:
        role.keep_conversations = body.keep_conversations
    concurrent = f"Role {role_id} was changed by another request at the same time; retry"
    if body.limits is not None:
        # Replace the whole set: clear first so the unique (role, router, type) rows never clash.
        role.limits.clear()
        await flush_or_conflict(session, concurrent)
        role.limits.extend(_limit_rows(body.limits))
    role.updated = utcnow()  # limits live in their own table, so the row itself may not change
    await mark_changed(session)
    await commit_or_conflict(session, concurrent)
    authenticator.forget_all()  # the permissions and limits of every holder changed


async def delete_role(session: AsyncSession, role_id: int) -> None:
    role = await get_role_model(session, role_id)
    users = (await session.execute(select(func.count(User.id)).where(User.role_id == role_id))).scalar_one()
    if users:
        raise ConflictError(f"Role {role_id} is still given to {users} user(s): change their role first")
    await session.delete(role)
    # A user may have been given the role meanwhile.
    await commit_or_conflict(session, f"Role {role_id} is still in use")
