"""/v1/admin/{organizations,roles,users,tokens}: reserved to the `admin` permission."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from api.common.listing import PageRequest
from api.common.schemas import CLIENT_ERRORS, MAX_ID, ListPage
from api.http.deps import Admin, AuthenticatorDep, BudgetsDep, HasherDep, page_params, require_admin, Session, SettingsDep
from api.http.params import PathId, QueryId
from api.quota import ledger
from api.identity import keys
from api.identity import organizations
from api.identity import roles
from api.identity import users
from api.identity.schemas import (
    BudgetChangeOut,
    BudgetRecharge,
    Created,
    KeyCreated,
    OrganizationCreate,
    OrganizationOut,
    OrganizationUpdate,
    RoleCreate,
    RoleOut,
    RoleUpdate,
    TokenCreate,
    TokenOut,
    UserCreate,
    UserOut,
    UserUpdate,
)

routes = APIRouter(prefix="/v1/admin", dependencies=[Depends(require_admin)], responses=CLIENT_ERRORS)

OrganizationPage = Annotated[PageRequest, Depends(page_params("OrganizationOrderBy", organizations.ORDER_COLUMNS))]
RolePage = Annotated[PageRequest, Depends(page_params("RoleOrderBy", roles.ORDER_COLUMNS))]
UserPage = Annotated[PageRequest, Depends(page_params("UserOrderBy", users.ORDER_COLUMNS))]
TokenPage = Annotated[PageRequest, Depends(page_params("TokenOrderBy", keys.ORDER_COLUMNS))]


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
async def update_organization(organization: PathId, body: OrganizationUpdate, session: Session) -> Response:
    await organizations.update_organization(session, organization, body)
    return Response(status_code=204)


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
    BudgetsDep, caller: Admin
) -> Response:
    budget_changed = "budget" in body.model_fields_set
    if budget_changed:
        # The 404 first: the ledger row for a missing user would fail its foreign key (a 500).
        await users.get_user_model(session, user)
        await ledger.record_set(session, user, caller.user_id, users.budget_to_nanos(body.budget))
    await users.update_user(session, hasher, authenticator, user, body)
    if budget_changed:
        await budgets.set_budget(user, users.budget_to_nanos(body.budget))
    return Response(status_code=204)


@routes.post("/users/{user}/budget", status_code=201, tags=["admin: users"])
async def recharge_budget(
    user: PathId, body: BudgetRecharge, session: Session, budgets: BudgetsDep, authenticator: AuthenticatorDep,
    caller: Admin
) -> Created:
    """Add to (or, negative, take from) a user's budget; every change goes to the ledger."""
    change = await ledger.recharge(session, budgets, authenticator, user, caller.user_id, body.amount,
                                    body.reason)
    return Created(id=change)


@routes.get("/users/{user}/budget", tags=["admin: users"])
async def budget_history(
    user: PathId, session: Session,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0, limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> ListPage[BudgetChangeOut]:
    data, total = await ledger.history(session, user, offset, limit)
    return ListPage(data=data, total=total)


@routes.delete("/users/{user}", status_code=204, tags=["admin: users"])
async def delete_user(user: PathId, session: Session, authenticator: AuthenticatorDep) -> Response:
    await users.delete_user(session, authenticator, user)
    return Response(status_code=204)


# Tokens: any user's API keys


@routes.post("/tokens", status_code=201, tags=["admin: tokens"])
async def create_token(body: TokenCreate, session: Session, settings: SettingsDep) -> KeyCreated:
    expires = keys.key_expiry(body.expires, settings.settings.keys.max_lifetime_days)
    key_id, secret = await keys.create_key(session, body.user, body.name, expires)
    return KeyCreated(id=key_id, token=secret)


@routes.get("/tokens", tags=["admin: tokens"])
async def list_tokens(session: Session, page: TokenPage, user: QueryId = None) -> ListPage[TokenOut]:
    data, total = await keys.list_keys(session, page, user_id=user)
    return ListPage(data=[keys.token_out(key) for key in data], total=total)


@routes.get("/tokens/{token}", tags=["admin: tokens"])
async def get_token(token: PathId, session: Session) -> TokenOut:
    return keys.token_out(await keys.get_key(session, token))


@routes.delete("/tokens/{token}", status_code=204, tags=["admin: tokens"])
async def delete_token(token: PathId, session: Session, authenticator: AuthenticatorDep) -> Response:
    await keys.delete_key(session, authenticator, token)
    return Response(status_code=204)
