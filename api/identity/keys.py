"""API keys: created for a user, shown once, stored as a hash; each may carry its own spend
controls (a budget or allowance, rate limits, the models it may use), a name and tags; revoked
(kept, with its record and history, and refused everywhere) or deleted."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import String, cast, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.common.listing import PageRequest, fetch_page
from api.common.periods import budget_fields, period_start, utc_now
from api.common.schemas import from_unix, to_unix
from api.db.base import utcnow
from api.db.tables import ApiKey, User
from api.errors import InvalidRequestError, NotFoundError
from api.identity.authenticator import Authenticator
from api.identity.changes import mark_changed
from api.identity.schemas import KeyCreate, KeyLimits, KeyOut, KeyUpdate, TokenOut
from api.identity.secrets import generate_api_key, hash_api_key, key_hint
from api.identity.users import budget_to_nanos

PLAYGROUND_KEY_NAME = "playground"

ORDER_COLUMNS = {"id": ApiKey.id, "name": ApiKey.name, "created": ApiKey.created}


def _fields(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id, "name": key.name, "token": key.hint, "expires": to_unix(key.expires), "created": to_unix(key.created),
        "limits": key.limits, "models": key.models, "tags": key.tags, "use_cache": key.use_cache,
        "keep_conversations": key.keep_conversations, "revoked": to_unix(key.revoked),
        "revoked_reason": key.revoked_reason,
        **budget_fields(key.budget_nanos, key.allowance_nanos, key.budget_period, key.period_start),
    }


def key_out(key: ApiKey) -> KeyOut:
    return KeyOut(**_fields(key))


def token_out(key: ApiKey) -> TokenOut:
    return TokenOut(user=key.user_id, **_fields(key))


def key_expiry(expires: int | None, max_lifetime_days: int | None) -> datetime | None:
    """The expiry to store: in the future, and within the configured maximum lifetime."""
    now = datetime.now(UTC)
    requested = from_unix(expires)
    if requested is not None and requested <= now:
        raise InvalidRequestError("expires must be in the future")
    if max_lifetime_days is None:
        return requested
    latest = now + timedelta(days=max_lifetime_days)
    if requested is None:
        return latest
    if requested > latest:
        raise InvalidRequestError(f"expires may be at most {max_lifetime_days} days ahead")
    return requested


async def create_key(
    session: AsyncSession, user_id: int, name: str, expires: datetime | None, controls: KeyCreate | None = None
) -> tuple[int, str]:
    """Create a key and return `(id, key)`: the only moment the key exists in clear."""
    if await session.get(User, user_id) is None:
        raise NotFoundError(f"User {user_id} not found")
    secret = generate_api_key()
    key = ApiKey(user_id=user_id, name=name, key_hash=hash_api_key(secret), hint=key_hint(secret), expires=expires)
    if controls is not None:
        if controls.budget_period is not None and controls.budget is None:
            raise InvalidRequestError("budget_period needs a budget")
        budget = budget_to_nanos(controls.budget)
        key.budget_nanos = budget
        if controls.budget_period is not None:
            key.allowance_nanos, key.budget_period = budget, controls.budget_period
            key.period_start = period_start(controls.budget_period, utc_now())
        key.limits = _limits(controls.limits)
        key.models, key.tags, key.use_cache = controls.models, controls.tags, controls.use_cache
        key.keep_conversations = controls.keep_conversations
    session.add(key)
    await session.commit()
    return key.id, secret


def _limits(limits: KeyLimits | None) -> dict[str, int] | None:
    if limits is None:
        return None
    return {kind: value for kind, value in limits.model_dump().items() if value is not None} or None


async def update_key(
    session: AsyncSession, authenticator: Authenticator, key: ApiKey, body: KeyUpdate, expires: datetime | None,
    commit: Callable[[AsyncSession], Awaitable[None]] | None = None,
) -> None:
    """Apply the fields present in `body` (the budget is the caller's: api.quota.ledger), `expires`
    as checked by `key_expiry`; committed by `commit` if given."""
    fields = body.model_fields_set
    if "name" in fields:
        key.name = body.name  # type: ignore[assignment]  # validated non-null
    if "expires" in fields:
        key.expires = expires
    if "limits" in fields:
        key.limits = _limits(body.limits)
    if "models" in fields:
        key.models = body.models
    if "tags" in fields:
        key.tags = body.tags
    if "use_cache" in fields:
        key.use_cache = bool(body.use_cache)
    if "keep_conversations" in fields:
        key.keep_conversations = bool(body.keep_conversations)
    await mark_changed(session)
    await (session.commit() if commit is None else commit(session))
    authenticator.forget_keys({key.id})


async def revoke_key(session: AsyncSession, authenticator: Authenticator, key: ApiKey, reason: str | None) -> None:
    """Refused from now on, on every process (as a deletion is), its record and history kept."""
    if key.revoked is None:
        key.revoked, key.revoked_reason = utcnow(), reason
        await mark_changed(session)
        await session.commit()
    authenticator.forget_keys({key.id})


async def list_keys(
    session: AsyncSession, page: PageRequest, user_id: int | None, name: str | None = None, tag: str | None = None,
    revoked: bool | None = None,
) -> tuple[list[ApiKey], int]:
    query = select(ApiKey)
    if user_id is not None:
        query = query.where(ApiKey.user_id == user_id)
    if name is not None:
        query = query.where(ApiKey.name == name)
    if revoked is not None:
        query = query.where(ApiKey.revoked.is_not(None) if revoked else ApiKey.revoked.is_(None))
    if tag is not None:
        # Tags are a short JSON list per key: matched as its JSON text, in both databases.
        query = query.where(cast(ApiKey.tags, String).contains(json.dumps(tag)))
    rows, total = await fetch_page(session, query, ORDER_COLUMNS[page.order_by], ApiKey.id, page)
    return [row[0] for row in rows], total


async def get_key(session: AsyncSession, key_id: int, owner_id: int | None = None) -> ApiKey:
    """The key `key_id`; with `owner_id`, only if it is that user's (else as if it did not exist)."""
    key = await session.get(ApiKey, key_id)
    if key is None or (owner_id is not None and key.user_id != owner_id):
        raise NotFoundError(f"Key {key_id} not found")
    return key


async def delete_key(session: AsyncSession, authenticator: Authenticator, key_id: int, owner_id: int | None = None) -> None:
    key = await get_key(session, key_id, owner_id)
    await session.delete(key)
    await mark_changed(session)
    await session.commit()
    authenticator.forget_keys({key_id})


async def revoke_playground_keys(session: AsyncSession, user_id: int) -> set[int]:
    """Delete the user's playground keys; returns their ids. The caller commits, then makes the
    authenticator forget them: forgotten before the commit, a key could be read back as it was."""
    revoked = set((await session.execute(
        delete(ApiKey).where(ApiKey.user_id == user_id, ApiKey.name == PLAYGROUND_KEY_NAME).returning(ApiKey.id)
    )).scalars().all())
    if revoked:  # a first login revokes none: nothing for other processes to drop
        await mark_changed(session)
    return revoked
