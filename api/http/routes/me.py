"""/v1/me/*: a user's own account and keys."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from api.common.listing import PageRequest
from api.common.schemas import CLIENT_ERRORS, ListPage
from api.http.deps import (
    AuthenticatorDep, BudgetsDep, Caller, ClientAddress, HasherDep, LoginThrottleDep, page_params, QuotasDep,
    Session, SettingsDep
)
from api.http.params import PathId
from api.identity import keys
from api.quota import ledger
from api.identity import profile as me
from api.identity.users import nanos_to_budget
from api.http.routes import admin_tokens
from api.identity.schemas import KeyCreate, KeyCreated, KeyOut, KeyRevoke, KeyUpdate, LimitUsage, UserInfo, UserInfoUpdate

routes = APIRouter(prefix="/v1/me", tags=["me"], responses=CLIENT_ERRORS)

KeyPage = Annotated[PageRequest, Depends(page_params("KeyOrderBy", keys.ORDER_COLUMNS))]


@routes.get("/info")
async def get_info(caller: Caller, session: Session, budgets: BudgetsDep, quotas: QuotasDep) -> UserInfo:
    info = await me.get_info(session, caller.require_user())
    if info.budget is not None:
        # What is left now: the live balance knows about calls in flight and not yet written.
        live = await ledger.live_remaining(budgets, "user", info.id, info.budget_period)
        if live is not None:
            info.budget_remaining = nanos_to_budget(live)
            if info.budget_period is None:
                info.budget = info.budget_remaining
    if caller.key_id is not None:
        info.key = keys.key_out(await keys.get_key(session, caller.key_id))
        if info.key.budget is not None:
            live = await ledger.live_remaining(budgets, "key", caller.key_id, info.key.budget_period)
            if live is not None:
                info.key.budget_remaining = nanos_to_budget(live)
                if info.key.budget_period is None:
                    info.key.budget = info.key.budget_remaining
    info.limits_usage = [LimitUsage(**vars(c)) for c in await quotas.counters(caller)]
    return info


@routes.patch("/info", status_code=204)
async def update_info(
    body: UserInfoUpdate, caller: Caller, session: Session, hasher: HasherDep, login_throttle: LoginThrottleDep,
    authenticator: AuthenticatorDep, client: ClientAddress,
) -> Response:
    user_id = caller.require_user()
    await me.update_info(session, hasher, login_throttle, authenticator, user_id, body, client)
    return Response(status_code=204)


@routes.post("/keys", status_code=201)
async def create_key(body: KeyCreate, caller: Caller, session: Session, settings: SettingsDep) -> KeyCreated:
    expires = keys.key_expiry(body.expires, settings.settings.keys.max_lifetime_days)
    key_id, secret = await me.create_own_key(session, caller.require_user(), body.name, expires, body)
    return KeyCreated(id=key_id, token=secret)


@routes.get("/keys")
async def list_keys(
    caller: Caller, session: Session, page: KeyPage, name: Annotated[str | None, Query(max_length=255)] = None,
    tag: Annotated[str | None, Query(max_length=64)] = None, revoked: bool | None = None,
) -> ListPage[KeyOut]:
    data, total = await keys.list_keys(session, page, user_id=caller.require_user(), name=name, tag=tag, revoked=revoked)
    return ListPage(data=[keys.key_out(key) for key in data], total=total)


@routes.patch("/keys/{key}", status_code=204)
async def update_key(
    key: PathId, body: KeyUpdate, caller: Caller, session: Session, budgets: BudgetsDep, authenticator: AuthenticatorDep,
    settings: SettingsDep,
) -> Response:
    """Rename, tag, cap or limit one of your keys (the tightest of the key's and yours applies)."""
    owned = await keys.get_key(session, key, owner_id=caller.require_user())
    await admin_tokens.update_key(owned, body, session, budgets, authenticator, caller.user_id, settings)
    return Response(status_code=204)


@routes.post("/keys/{key}/revoke", status_code=204)
async def revoke_key(key: PathId, body: KeyRevoke, caller: Caller, session: Session, authenticator: AuthenticatorDep) -> Response:
    await keys.revoke_key(session, authenticator, await keys.get_key(session, key, owner_id=caller.require_user()), body.reason)
    return Response(status_code=204)


@routes.get("/keys/{key}")
async def get_key(key: PathId, caller: Caller, session: Session) -> KeyOut:
    return keys.key_out(await keys.get_key(session, key, owner_id=caller.require_user()))


@routes.delete("/keys/{key}", status_code=204)
async def delete_key(key: PathId, caller: Caller, session: Session, authenticator: AuthenticatorDep) -> Response:
    await keys.delete_key(session, authenticator, key, owner_id=caller.require_user())
    return Response(status_code=204)
