"""API keys and passwords: how they are made, shown and stored."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from passlib.context import CryptContext

API_KEY_PREFIX = "tg-"


def generate_api_key() -> str:
    """A fresh key: 256 random bits behind a prefix that secret scanners can recognise."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    # Keys carry 256 random bits, so a fast hash is enough: no dictionary can reach them,
    # and the lookup by hash stays a single indexed read.
    return hashlib.sha256(key.encode()).hexdigest()


def key_hint(key: str) -> str:
    """What a listing shows of a key: enough to tell keys apart, useless as a credential."""
    return f"{key[:7]}...{key[-4:]}"


class PasswordHasher:
    """argon2 through passlib. Hashing is CPU-bound, so it runs off the event loop.

    passlib and argon2 are loaded by the first password to hash or check (in that thread): a
    process that serves no login nor password change does not hold them (some 5 MB)."""

    def __init__(self) -> None:
        self._loaded: tuple[CryptContext, str] | None = None

    def _passwords(self) -> tuple[CryptContext, str]:
        # Two first calls at once may both load it: the same, harmlessly done twice.
        if self._loaded is None:
            from passlib.context import CryptContext

            context = CryptContext(schemes=["argon2"], deprecated="auto")
            # Verifying against this when the email is unknown makes both failures take as long.
            self._loaded = (context, context.hash(secrets.token_urlsafe(16)))
        return self._loaded

    def _hash(self, password: str) -> str:
        return self._passwords()[0].hash(password)

    def _verify(self, password: str, password_hash: str | None) -> bool:
        context, dummy_hash = self._passwords()
        if password_hash is None:
            context.verify(password, dummy_hash)
            return False
        return context.verify(password, password_hash)

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hash, password)

    async def verify(self, password: str, password_hash: str | None) -> bool:
        return await asyncio.to_thread(self._verify, password, password_hash)
