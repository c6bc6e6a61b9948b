"""/v1/admin/{organizations,roles,users,tokens}: reserved to the `admin` permission."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Response
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from api.common.listing import PageRequest
from api.common.schemas import CLIENT_ERRORS, MAX_ID, ListPage
from api.http.deps import Admin, AuthenticatorDep, BudgetsDep, HasherDep, page_params, require_admin, Session, VectorsDep
from api.http.params import PathId, QueryId
from api.quota import ledger
from api.quota.balances import BudgetStore
from api.quota.idempotency import IdempotencyKey, earlier_answer, remember
from api.identity import organizations
from api.identity import roles
from api.identity import users
from api.rag import collections
from api.identity.schemas import (
    BudgetChangeOut,
    BudgetRecharge,
    Created,
    OrganizationCreate,
    OrganizationOut,
    OrganizationUpdate,
    RoleCreate,
    RoleOut,
    RoleUpdate,
    UserCreate,
    UserOut,
    UserUpdate,
)

routes = APIRouter(prefix="/v1/admin", dependencies=[Depends(require_admin)], responses=CLIENT_ERRORS)

IdempotencyHeader = Annotated[str | None, Header(
    alias="Idempotency-Key", description="Makes a retry safe: the same key and body answer the first result "
    "(kept 24 h), the same key with another body is a 409.",
)]


def ledger_page(
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0, limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> tuple[int, int]:
    return offset, limit


LedgerPage = Annotated[tuple[int, int], Depends(ledger_page)]


def idempotency_of(key: str | None, actor: int | None, method: str, path: str, body: BaseModel) -> IdempotencyKey | None:
    return None if key is None else IdempotencyKey.of(key, actor, method, path, body.model_dump(mode="json"))


async def recharge(
    holder: str, holder_id: int, path: str, body: BudgetRecharge, session: AsyncSession, budgets: BudgetStore,
    actor: int | None, idempotency_key: str | None,
) -> Created:
    """A recharge of a user's, a key's or an organization's budget (POST `path`)."""
    idempotency = idempotency_of(idempotency_key, actor, "POST", path, body)
    return Created(id=await ledger.recharge(session, budgets, holder, holder_id, actor, body.amount, body.reason, idempotency))


OrganizationPage = Annotated[PageRequest, Depends(page_params("OrganizationOrderBy", organizations.ORDER_COLUMNS))]
RolePage = Annotated[PageRequest, Depends(page_params("RoleOrderBy", roles.ORDER_COLUMNS))]
UserPage = Annotated[PageRequest, Depends(page_params("UserOrderBy", users.ORDER_COLUMNS))]


# Organizations


@routes.post("/organizations", status_code=201, tags=["admin: organizations"])
async def create_organization(body: OrganizationCreate, session: Session) -> Created:
    return Created(id=await organizations.create_organization(session, body))


@routes.get("/organizations", tags=["admin: organizations"])
async def list_organizations(session: Session, page: OrganizationPage) -> ListPage[OrganizationOut]:
    data, total = await organizations.list_organizations(session, page)
    return ListPage(data=data, total=total)


@routes.get("/organizations/{organization}", tags=["admin: organizations"])
async def get_organization(organization: PathId, session: Session) -> OrganizationOut:
    return await organizations.get_organization(session, organization)


@routes.patch("/organizations/{organization}", status_code=204, tags=["admin: organizations"])
async def update_organization(
    organization: PathId, body: OrganizationUpdate, session: Session, budgets: BudgetsDep, authenticator: AuthenticatorDep,
    caller: Admin,
) -> Response:
    row = await organizations.get_organization_model(session, organization)
    commit = ledger.set_requested(session, budgets, "organization", row, caller.user_id, body.model_fields_set,
                                  body.budget, body.budget_period)
    await organizations.update_organization(session, authenticator, organization, body, commit)
    return Response(status_code=204)


@routes.post("/organizations/{organization}/budget", status_code=201, tags=["admin: organizations"])
async def recharge_organization_budget(
    organization: PathId, body: BudgetRecharge, session: Session, budgets: BudgetsDep, authenticator: AuthenticatorDep,
    caller: Admin, idempotency_key: IdempotencyHeader = None,
) -> Created:
    """Add to (or, negative, take from) the organization's budget (an allowance: for its current period)."""
    created = await recharge("organization", organization, f"/v1/admin/organizations/{organization}/budget", body, session,
                             budgets, caller.user_id, idempotency_key)
    authenticator.forget_all()
    return created


@routes.get("/organizations/{organization}/budget", tags=["admin: organizations"])
async def organization_budget_history(organization: PathId, session: Session, page: LedgerPage) -> ListPage[BudgetChangeOut]:
    data, total = await ledger.history(session, "organization", organization, *page)
    return ListPage(data=data, total=total)


@routes.delete("/organizations/{organization}", status_code=204, tags=["admin: organizations"])
async def delete_organization(organization: PathId, session: Session) -> Response:
    await organizations.delete_organization(session, organization)
    return Response(status_code=204)


# Roles


@routes.post("/roles", status_code=201, tags=["admin: roles"])
async def create_role(body: RoleCreate, session: Session) -> Created:
    return Created(id=await roles.create_role(session, body))


@routes.get("/roles", tags=["admin: roles"])
async def list_roles(session: Session, page: RolePage) -> ListPage[RoleOut]:
    data, total = await roles.list_roles(session, page)
    return ListPage(data=data, total=total)


@routes.get("/roles/{role}", tags=["admin: roles"])
async def get_role(role: PathId, session: Session) -> RoleOut:
    return await roles.get_role(session, role)


@routes.patch("/roles/{role}", status_code=204, tags=["admin: roles"])
async def update_role(role: PathId, body: RoleUpdate, session: Session, authenticator: AuthenticatorDep) -> Response:
    await roles.update_role(session, authenticator, role, body)
    return Response(status_code=204)


@routes.delete("/roles/{role}", status_code=204, tags=["admin: roles"])
async def delete_role(role: PathId, session: Session) -> Response:
    await roles.delete_role(session, role)
    return Response(status_code=204)


# Users


@routes.post("/users", status_code=201, tags=["admin: users"])
async def create_user(body: UserCreate, session: Session, hasher: HasherDep) -> Created:
    return Created(id=await users.create_user(session, hasher, body))


@routes.get("/users", tags=["admin: users"])
async def list_users(
    session: Session,
    page: UserPage,
    role: QueryId = None,
    organization: QueryId = None,
    email: Annotated[str | None, Query(max_length=254)] = None,
) -> ListPage[UserOut]:
    data, total = await users.list_users(session, page, role_id=role, organization_id=organization, email=email)
    return ListPage(data=data, total=total)


@routes.get("/users/{user}", tags=["admin: users"])
async def get_user(user: PathId, session: Session) -> UserOut:
    return await users.get_user(session, user)


@routes.patch("/users/{user}", status_code=204, tags=["admin: users"])
async def update_user(
    user: PathId, body: UserUpdate, session: Session, hasher: HasherDep, authenticator: AuthenticatorDep, budgets:
    BudgetsDep, caller: Admin, idempotency_key: IdempotencyHeader = None,
) -> Response:
    idempotency = None
    if idempotency_key is not None:
        idempotency = IdempotencyKey.of(idempotency_key, caller.user_id, "PATCH", f"/v1/admin/users/{user}",
                                        body.model_dump(mode="json", exclude_unset=True))
        if await earlier_answer(session, idempotency) is not None:
            return Response(status_code=204)
    # The 404 first: the ledger row for a missing user would fail its foreign key (a 500).
    row = await users.get_user_model(session, user)
    commit = ledger.set_requested(session, budgets, "user", row, caller.user_id, body.model_fields_set,
                                  body.budget, body.budget_period)
    if idempotency is not None:
        await remember(session, idempotency, 204, None)
    await users.update_user(session, hasher, authenticator, user, body, commit)
    return Response(status_code=204)


@routes.post("/users/{user}/budget", status_code=201, tags=["admin: users"])
async def recharge_budget(
    user: PathId, body: BudgetRecharge, session: Session, budgets: BudgetsDep, authenticator: AuthenticatorDep,
    caller: Admin, idempotency_key: IdempotencyHeader = None,
) -> Created:
    """Add to (or, negative, take from) a user's budget; every change goes to the ledger."""
    created = await recharge("user", user, f"/v1/admin/users/{user}/budget", body, session, budgets, caller.user_id,
                             idempotency_key)
    authenticator.forget_user(user)
    return created


@routes.get("/users/{user}/budget", tags=["admin: users"])
async def budget_history(user: PathId, session: Session, page: LedgerPage) -> ListPage[BudgetChangeOut]:
    data, total = await ledger.history(session, "user", user, *page)
    return ListPage(data=data, total=total)


@routes.delete("/users/{user}", status_code=204, tags=["admin: users"])
async def delete_user(user: PathId, session: Session, authenticator: AuthenticatorDep, vectors: VectorsDep) -> Response:
    await collections.delete_vectors_of_user(session, vectors, user)
    await users.delete_user(session, authenticator, user)
    await vectors.drop_owner(user)
    return Response(status_code=204)
