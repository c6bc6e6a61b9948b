"""API keys: created for a user, shown once, stored as a hash, revoked by deletion."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.common.listing import PageRequest, fetch_page
from api.common.schemas import from_unix, to_unix
from api.db.tables import ApiKey, User
from api.errors import InvalidRequestError, NotFoundError
from api.identity.authenticator import Authenticator
from api.identity.changes import mark_changed
from api.identity.schemas import KeyOut, TokenOut
from api.identity.secrets import generate_api_key, hash_api_key, key_hint

PLAYGROUND_KEY_NAME = "playground"

ORDER_COLUMNS = {"id": ApiKey.id, "name": ApiKey.name, "created": ApiKey.created}


def key_out(key: ApiKey) -> KeyOut:
    return KeyOut(id=key.id, name=key.name, token=key.hint, expires=to_unix(key.expires), created=to_unix(key.created))


def token_out(key: ApiKey) -> TokenOut:
    return TokenOut(
        id=key.id, name=key.name, token=key.hint, user=key.user_id,
        expires=to_unix(key.expires), created=to_unix(key.created),
    )


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


async def create_key(session: AsyncSession, user_id: int, name: str, expires: datetime | None) -> tuple[int, str]:
    """Create a key and return `(id, key)`: the only moment the key exists in clear."""
    if await session.get(User, user_id) is None:
        raise NotFoundError(f"User {user_id} not found")
    secret = generate_api_key()
    key = ApiKey(user_id=user_id, name=name, key_hash=hash_api_key(secret), hint=key_hint(secret), expires=expires)
    session.add(key)
    await session.commit()
    return key.id, secret


async def list_keys(session: AsyncSession, page: PageRequest, user_id: int | None) -> tuple[list[ApiKey], int]:
    query = select(ApiKey)
    if user_id is not None:
        query = query.where(ApiKey.user_id == user_id)
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
