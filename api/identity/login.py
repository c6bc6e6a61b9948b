"""Email + password login, throttled, which issues a fresh playground key."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api.db.tables import ApiKey, User
from api.errors import AuthenticationError, TooManyRequestsError
from api.identity.authenticator import Authenticator
from api.identity.keys import PLAYGROUND_KEY_NAME, revoke_playground_keys
from api.identity.secrets import PasswordHasher, generate_api_key, hash_api_key, key_hint
from api.settings import LoginSettings
from api.state import CounterStore

INVALID_CREDENTIALS = "Invalid email or password"


@dataclass(frozen=True)
class LoginThrottle:
    """Counts failed password checks per email and per client address in a fixed window."""

    counters: CounterStore
    settings: LoginSettings

    def _keys(self, email: str, client: str | None) -> list[str]:
        keys = [f"login-fail:email:{email}"]
        if client:
            keys.append(f"login-fail:client:{client}")
        return keys

    async def check(self, email: str, client: str | None) -> None:
        for key in self._keys(email, client):
            window = await self.counters.peek(key)
            if window.count >= self.settings.max_failures:
                raise TooManyRequestsError("Too many failed login attempts; try again later", window.retry_after)

    async def record_failure(self, email: str, client: str | None) -> None:
        for key in self._keys(email, client):
            await self.counters.hit(key, self.settings.window_seconds)


async def verify_password_throttled(
    hasher: PasswordHasher, throttle: LoginThrottle, user: User | None, email: str, password: str, client: str | None
) -> None:
    """Raise unless `password` is `user`'s; unknown emails and wrong passwords look the same."""
    await throttle.check(email, client)
    if not await hasher.verify(password, user.password_hash if user else None) or user is None:
        await throttle.record_failure(email, client)
        raise AuthenticationError(INVALID_CREDENTIALS)


async def login(
    session: AsyncSession,
    hasher: PasswordHasher,
    throttle: LoginThrottle,
    authenticator: Authenticator,
    playground_lifetime_days: int,
    email: str,
    password: str,
    client: str | None,
) -> tuple[int, str]:
    """Check the credentials; replace the user's playground key with a new one, returned once."""
    email = email.strip().lower()
    user = (await session.execute(select(User).where(User.email == email))).scalar_one_or_none()
    await verify_password_throttled(hasher, throttle, user, email, password, client)
    assert user is not None
    now = datetime.now(UTC)
    if user.expires is not None and user.expires <= now:
        raise AuthenticationError("This account has expired")
    revoked = await revoke_playground_keys(session, user.id)
    secret = generate_api_key()
    key = ApiKey(
        user_id=user.id, name=PLAYGROUND_KEY_NAME, key_hash=hash_api_key(secret), hint=key_hint(secret),
        expires=now + timedelta(days=playground_lifetime_days),
    )
    session.add(key)
    await session.commit()
    authenticator.forget_keys(revoked)
    return key.id, secret
