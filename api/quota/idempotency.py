"""Idempotency-Key on the requests that move money (budget recharges and sets).

A client that did not get an answer (a timeout, a 503) retries. With a key, the retry of a
change that was committed gets the first answer again instead of applying the change twice;
the same key with another request is a 409. The key is remembered in the change's own
transaction, so it is remembered exactly when the change was committed, and for a day.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from api.db.base import utcnow
from api.db.tables import IdempotentRequest
from api.errors import ConflictError, InvalidRequestError

KEPT_FOR = timedelta(hours=24)
MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class IdempotencyKey:
    scope: str  # whose key it is: keys of different callers never meet
    key: str
    fingerprint: str  # the request the key was first used with

    @classmethod
    def of(cls, key: str, actor: int | None, method: str, path: str, body: Any) -> IdempotencyKey:
        if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
            raise InvalidRequestError(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable characters")
        request = json.dumps([method, path, body], sort_keys=True, separators=(",", ":"), default=str)
        return cls(scope="master" if actor is None else f"user:{actor}", key=key,
                   fingerprint=hashlib.sha256(request.encode()).hexdigest())


@dataclass(frozen=True)
class Answer:
    status_code: int
    body: Any


async def earlier_answer(session: AsyncSession, idempotency: IdempotencyKey) -> Answer | None:
    """The answer given to the first request with this key, or None if there was none (or it
    is older than KEPT_FOR). A different request with the same key is a ConflictError."""
    row = (await session.execute(
        select(IdempotentRequest).where(IdempotentRequest.scope == idempotency.scope, IdempotentRequest.key == idempotency.key)
    )).scalar_one_or_none()
    if row is None or row.created < utcnow() - KEPT_FOR:
        return None
    if row.fingerprint != idempotency.fingerprint:
        raise ConflictError("This Idempotency-Key was used with a different request: use a new key for a new change")
    return Answer(row.status_code, None if row.response is None else json.loads(row.response))


async def remember(session: AsyncSession, idempotency: IdempotencyKey, status_code: int, body: Any) -> None:
    """Keep the answer in `session`'s transaction (the caller commits); drop expired keys."""
    await session.execute(delete(IdempotentRequest).where(IdempotentRequest.created < utcnow() - KEPT_FOR))
    session.add(IdempotentRequest(scope=idempotency.scope, key=idempotency.key, fingerprint=idempotency.fingerprint,
                                  status_code=status_code, response=None if body is None else json.dumps(body)))
