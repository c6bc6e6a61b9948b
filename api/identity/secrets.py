"""API keys and passwords: how they are made, shown and stored."""

from __future__ import annotations

import asyncio
import hashlib
import secrets

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
    """argon2 through passlib. Hashing is CPU-bound, so it runs off the event loop."""

    def __init__(self) -> None:
        self._context = CryptContext(schemes=["argon2"], deprecated="auto")
        # Verifying against this when the email is unknown makes both failures take as long.
        self._dummy_hash = self._context.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._context.hash, password)

    async def verify(self, password: str, password_hash: str | None) -> bool:
        if password_hash is None:
            await asyncio.to_thread(self._context.verify, password, self._dummy_hash)
            return False
        return await asyncio.to_thread(self._context.verify, password, password_hash)
