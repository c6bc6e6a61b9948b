"""Self-service: a user reads and changes their own account."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from api.identity.authenticator import Authenticator
from api.common.periods import budget_fields
from api.common.schemas import to_unix
from api.db.base import utcnow
from api.db.tables import Role, User
from api.errors import AuthenticationError, InvalidRequestError
from api.identity.keys import create_key, revoke_playground_keys
from api.identity.login import LoginThrottle, verify_password_throttled
from api.identity.roles import role_limits, role_permissions
from api.identity.schemas import KeyCreate, UserInfo, UserInfoUpdate
from api.identity.secrets import PasswordHasher
from api.identity.users import commit_unique_email


async def own_user(session: AsyncSession, user_id: int) -> User:
    """The caller's own user. A user deleted since their key was checked (the key still in the
    cache of a process that did not make the deletion) took their keys with them: the key is
    no longer valid, a 401 like any deleted key, not a 404 about a user."""
    user = await session.get(User, user_id)
    if user is None:
        raise AuthenticationError("Invalid API key")
    return user


async def create_own_key(
    session: AsyncSession, user_id: int, name: str, expires: datetime | None, controls: KeyCreate | None = None
) -> tuple[int, str]:
    await own_user(session, user_id)
    return await create_key(session, user_id, name, expires, controls)


async def get_info(session: AsyncSession, user_id: int) -> UserInfo:
    user = await own_user(session, user_id)
    role = await session.get(Role, user.role_id)
    assert role is not None  # users.role_id is a non-null foreign key
    return UserInfo(
        id=user.id, email=user.email, name=user.name, role=user.role_id, organization=user.organization_id,
        **budget_fields(user.budget_nanos, user.allowance_nanos, user.budget_period, user.period_start),
        permissions=role_permissions(role), limits=role_limits(role),
        expires=to_unix(user.expires), priority=user.priority,
        created=to_unix(user.created), updated=to_unix(user.updated),
    )


async def update_info(
    session: AsyncSession,
    hasher: PasswordHasher,
    throttle: LoginThrottle,
    authenticator: Authenticator,
    user_id: int,
    body: UserInfoUpdate,
    client: str | None,
) -> None:
    """Change name, email or password. Email and password need the current password, and a new
    password ends the playground session (its key is revoked)."""
    user = await own_user(session, user_id)
    changes = body.model_dump(exclude_unset=True, exclude={"current_password"})
    if body.email is not None or body.password is not None:
        if body.current_password is None:
            raise InvalidRequestError("current_password is required to change the email or the password")
        try:
            await verify_password_throttled(hasher, throttle, user, user.email, body.current_password, client)
        except AuthenticationError as exc:
            # 401 would read as "your key is bad"; the key is fine, the password is not.
            raise InvalidRequestError("current_password is incorrect") from exc
    if changes.get("name") is not None:
        user.name = body.name
    if body.email is not None:
        user.email = body.email
    if body.password is not None:
        user.password_hash = await hasher.hash(body.password)
        await revoke_playground_keys(session, user.id)  # forgotten below, after the commit
    user.updated = utcnow()
    await commit_unique_email(session, user.email)
    authenticator.forget_user(user_id)
