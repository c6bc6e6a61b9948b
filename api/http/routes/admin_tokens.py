"""/v1/admin/tokens: any user's API keys and their spend controls (the `admin` permission)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy.ext.asyncio import AsyncSession

from api.common.listing import PageRequest
from api.common.schemas import CLIENT_ERRORS, ListPage
from api.http.deps import Admin, AuthenticatorDep, BudgetsDep, page_params, require_admin, Session, SettingsDep
from api.http.params import PathId, QueryId
from api.http.routes.admin_identity import IdempotencyHeader, LedgerPage, recharge
from api.db.tables import ApiKey
from api.identity import keys
from api.identity.authenticator import Authenticator
from api.identity.schemas import BudgetChangeOut, BudgetRecharge, Created, KeyCreated, KeyRevoke, KeyUpdate, TokenCreate, TokenOut
from api.quota import ledger
from api.quota.balances import BudgetStore
from api.settings import Settings

routes = APIRouter(prefix="/v1/admin", dependencies=[Depends(require_admin)], responses=CLIENT_ERRORS, tags=["admin: tokens"])

TokenPage = Annotated[PageRequest, Depends(page_params("TokenOrderBy", keys.ORDER_COLUMNS))]


@routes.post("/tokens", status_code=201)
async def create_token(body: TokenCreate, session: Session, settings: SettingsDep) -> KeyCreated:
    expires = keys.key_expiry(body.expires, settings.settings.keys.max_lifetime_days)
    key_id, secret = await keys.create_key(session, body.user, body.name, expires, body)
    return KeyCreated(id=key_id, token=secret)


@routes.get("/tokens")
async def list_tokens(
    session: Session, page: TokenPage, user: QueryId = None, name: Annotated[str | None, Query(max_length=255)] = None,
    tag: Annotated[str | None, Query(max_length=64)] = None, revoked: bool | None = None,
) -> ListPage[TokenOut]:
    data, total = await keys.list_keys(session, page, user_id=user, name=name, tag=tag, revoked=revoked)
    return ListPage(data=[keys.token_out(key) for key in data], total=total)


@routes.get("/tokens/{token}")
async def get_token(token: PathId, session: Session) -> TokenOut:
    return keys.token_out(await keys.get_key(session, token))


@routes.patch("/tokens/{token}", status_code=204)
async def update_token(
    token: PathId, body: KeyUpdate, session: Session, budgets: BudgetsDep, authenticator: AuthenticatorDep, caller: Admin,
    settings: SettingsDep,
) -> Response:
    await update_key(await keys.get_key(session, token), body, session, budgets, authenticator, caller.user_id, settings)
    return Response(status_code=204)


async def update_key(
    key: ApiKey, body: KeyUpdate, session: AsyncSession, budgets: BudgetStore, authenticator: Authenticator,
    actor: int | None, settings: Settings,
) -> None:
    """A key's PATCH, for an administrator's route and for its owner's."""
    expires = keys.key_expiry(body.expires, settings.settings.keys.max_lifetime_days) if "expires" in body.model_fields_set else None
    commit = ledger.set_requested(session, budgets, "key", key, actor, body.model_fields_set, body.budget, body.budget_period)
    await keys.update_key(session, authenticator, key, body, expires, commit)


@routes.post("/tokens/{token}/revoke", status_code=204)
async def revoke_token(token: PathId, body: KeyRevoke, session: Session, authenticator: AuthenticatorDep) -> Response:
    """Refused from now on, on every replica; the key, its records and its history are kept."""
    await keys.revoke_key(session, authenticator, await keys.get_key(session, token), body.reason)
    return Response(status_code=204)


@routes.post("/tokens/{token}/budget", status_code=201)
async def recharge_token_budget(
    token: PathId, body: BudgetRecharge, session: Session, budgets: BudgetsDep, authenticator: AuthenticatorDep,
    caller: Admin, idempotency_key: IdempotencyHeader = None,
) -> Created:
    """Add to (or, negative, take from) the key's budget (an allowance: for its current period)."""
    created = await recharge("key", token, f"/v1/admin/tokens/{token}/budget", body, session, budgets, caller.user_id,
                             idempotency_key)
    authenticator.forget_keys({token})
    return created


@routes.get("/tokens/{token}/budget")
async def token_budget_history(token: PathId, session: Session, page: LedgerPage) -> ListPage[BudgetChangeOut]:
    data, total = await ledger.history(session, "key", token, *page)
    return ListPage(data=data, total=total)


@routes.delete("/tokens/{token}", status_code=204)
async def delete_token(token: PathId, session: Session, authenticator: AuthenticatorDep) -> Response:
    await keys.delete_key(session, authenticator, token)
    return Response(status_code=204)
