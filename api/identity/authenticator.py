"""Who is calling: API key (or master key) to a `Principal`, with a short revocation-safe cache."""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Callable
from typing import Any
from datetime import UTC, datetime

from sqlalchemy import literal, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.db.engine import database_unavailable, database_unavailable_error
from api.db.tables import ApiKey, Organization, Role, RoleLimit, User
from api.errors import AuthenticationError, DependencyUnavailableError
from api.identity.changes import current_token
from api.identity.principal import MASTER_PRINCIPAL, Budget, Principal
from api.identity.secrets import hash_api_key

logger = logging.getLogger("tollgate.auth")


# How long a key verified before the database became unreachable keeps working (see
# Authenticator). Revoking a key needs the database too, so during an outage nothing can be
# revoked; what this can let through is a revocation made in the last `ttl` before it.
STALE_IF_UNAVAILABLE_SECONDS = 30.0

# The longest a resolved key is used without reading it again, however many checks found no
# change: what bounds a change that was never signalled (made straight in the database, or
# by a version of Tollgate from before the change token).
MAX_ENTRY_SECONDS = 60.0

_UNSEEN = object()  # the watcher has read no change token yet
# A tiny ttl must not become hundreds of queries a second: entries then simply live their ttl.
MIN_CHECK_SECONDS = 0.05


def _earliest(*moments: datetime | None) -> datetime | None:
    present = [m for m in moments if m is not None]
    return min(present) if present else None


class Authenticator:
    """Resolves bearer keys, and caches what it resolved.

    A change made through this process (a key deleted, a user or role changed) drops the
    entries it concerns at once (`forget_*`, once it committed); it also replaced the change
    token (`api.identity.changes.mark_changed`, in the change's own transaction).
    `check_changes` reads the signal every `ttl / 2` and drops every entry when something
    changed. So a change reaches every process within `ttl` (≤ 1 s), and an entry is used:
    - for `ttl` after it was read;
    - after that, for `ttl` after the last check that found no change;
    - never longer than `max_age` in all.
    With no check succeeding (the watcher not running, the database down), entries live `ttl`.

    When the database cannot be reached, a key verified in the last `stale_seconds` keeps
    working (its expiry still checked), re-checked at most once per `ttl`, so inference goes on
    through a database restart; any other key gets 503 (DependencyUnavailableError)."""

    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        master_key: str,
        ttl: float = 1.0,
        max_entries: int = 50_000,
        stale_seconds: float = STALE_IF_UNAVAILABLE_SECONDS,
        max_age: float = MAX_ENTRY_SECONDS,
    ) -> None:
        self._session_factory = session_factory
        self._master_key = master_key.encode()
        self._ttl = ttl
        self._stale_seconds = stale_seconds
        self._max_entries = max_entries
        self._max_age = max_age
        # Key hash -> (principal, when it was read, served stale until (database down)).
        self._cache: dict[str, tuple[Principal, float, float]] = {}
        # The start of the last check that found no change since the one before.
        self._confirmed = float("-inf")
        self._seen: object = _UNSEEN  # the change token the last check read
        # One database read per key at a time: requests that miss together share it.
        self._loading: dict[str, asyncio.Future[Principal]] = {}
        # Bumped by every forget_*: a read that started before it must not be cached after it.
        self._generation = 0

    async def authenticate(self, authorization: str | None) -> Principal:
        key = _bearer_token(authorization)
        if hmac.compare_digest(key.encode(), self._master_key):
            return MASTER_PRINCIPAL
        key_hash = hash_api_key(key)
        principal = self._cached(key_hash)
        if principal is None:
            principal = await self._load_once(key_hash)
        if principal.expires is not None and principal.expires <= datetime.now(UTC):
            raise AuthenticationError("API key or user has expired")
        return principal

    async def _load_once(self, key_hash: str) -> Principal:
        loading = self._loading.get(key_hash)
        if loading is None:
            loading = asyncio.ensure_future(self._load_and_remember(key_hash))
            self._loading[key_hash] = loading
            loading.add_done_callback(lambda done: self._finished_loading(key_hash, done))
        # Shielded: one waiter's cancellation (a client gone) must not fail the others.
        return await asyncio.shield(loading)

    def _finished_loading(self, key_hash: str, done: asyncio.Future[Principal]) -> None:
        if self._loading.get(key_hash) is done:  # not a read started since a change dropped it
            del self._loading[key_hash]

    async def _load_and_remember(self, key_hash: str) -> Principal:
        generation = self._generation
        try:
            principal = await self._load(key_hash)
        except AuthenticationError:
            self._cache.pop(key_hash, None)  # gone from the database: no stale copy either
            raise
        except DependencyUnavailableError:
            stale = self._stale(key_hash)
            if stale is None:
                raise
            return stale
        if generation == self._generation:
            self._remember(key_hash, principal)
        return principal

    # Changes made through this process: each is called once the change is committed.

    def forget_keys(self, key_ids: set[int]) -> None:
        self._drop(lambda principal: principal.key_id in key_ids)

    def forget_user(self, user_id: int) -> None:
        self._drop(lambda principal: principal.user_id == user_id)

    def forget_all(self) -> None:
        self._drop(None)

    def _drop(self, concerned: Callable[[Principal], bool] | None) -> None:
        self._generation += 1
        # Reads in flight began before the change: later requests must not join them.
        self._loading.clear()
        if concerned is None:
            self._cache.clear()
            return
        for key_hash, (principal, *_) in list(self._cache.items()):
            if concerned(principal):
                del self._cache[key_hash]

    @property
    def check_every(self) -> float | None:
        """How often `check_changes` should run; None: entries are not cached, nothing to check."""
        return max(self._ttl / 2, MIN_CHECK_SECONDS) if self._ttl > 0 else None

    async def check_changes(self) -> None:
        """Drop every entry if another process signalled a change; a check that finds none
        keeps the entries usable for one more `ttl`."""
        started = time.monotonic()
        try:
            async with self._session_factory() as session:
                token = await current_token(session)
        except Exception as error:
            # Unconfirmed, the entries live `ttl` and are read again, as without a watcher.
            if not database_unavailable(error):
                logger.exception("checking for changes to keys, users or roles failed")
            return
        if token != self._seen:
            self._drop(None)
            self._seen = token
        self._confirmed = started

    def _usable_until(self, loaded_at: float) -> float:
        """Until when an entry read at `loaded_at` is used: `ttl` past the last moment it is
        known to match the database (its read, or a later check that found no change), and
        never past `max_age`."""
        return min(max(loaded_at, self._confirmed) + self._ttl, loaded_at + self._max_age)

    def _cached(self, key_hash: str) -> Principal | None:
        entry = self._cache.get(key_hash)
        if entry is None:
            return None
        principal, loaded_at, stale_until = entry
        now = time.monotonic()
        if now < stale_until or now < self._usable_until(loaded_at):
            return principal
        return None  # an expired entry stays, as the fallback of a database outage

    def _stale(self, key_hash: str) -> Principal | None:
        """The expired entry of a key, if verified recently enough to serve while the database
        is down; served for one `ttl`, so a down database is tried once per ttl, not per request."""
        entry = self._cache.get(key_hash)
        now = time.monotonic()
        if entry is not None:
            principal, loaded_at, _ = entry
            if now < self._usable_until(loaded_at) + self._stale_seconds:
                self._cache[key_hash] = (principal, loaded_at, now + self._ttl)
                return principal
        self._cache.pop(key_hash, None)
        return None

    def _remember(self, key_hash: str, principal: Principal) -> None:
        if self._ttl <= 0:
            return
        if len(self._cache) >= self._max_entries:
            self._cache.clear()
        self._cache[key_hash] = (principal, principal.loaded_at, 0.0)

    async def _load(self, key_hash: str) -> Principal:
        return await self._load_where(ApiKey.key_hash == key_hash, "Invalid API key")

    async def principal_for_user(self, user_id: int, key_name: str) -> Principal:
        """The user as if calling with a key: for work done on their behalf (ingestion jobs)."""
        return await self._load_where(User.id == user_id, "Unknown user", key_name=key_name)

    async def _load_where(self, where: Any, missing: str, key_name: str | None = None) -> Principal:
        if key_name is None:
            query = select(ApiKey, User, Organization, Role.permissions, Role.keep_conversations).join(User, User.id == ApiKey.user_id)
        else:
            query = select(literal(None), User, Organization, Role.permissions, Role.keep_conversations).select_from(User)
        query = (query.join(Role, Role.id == User.role_id)
                 .outerjoin(Organization, Organization.id == User.organization_id).where(where))
        loaded_at = time.monotonic()  # before the read: what it finds is at least this recent
        try:
            async with self._session_factory() as session:
                row = (await session.execute(query)).first()
                if row is None:
                    raise AuthenticationError(missing)
                key, user, organization, permissions, role_keeps = row
                limit_rows = (
                    await session.execute(
                        select(RoleLimit.router_id, RoleLimit.type, RoleLimit.value).where(RoleLimit.role_id == user.role_id)
                    )
                ).all()
        except Exception as error:
            if database_unavailable(error):
                raise database_unavailable_error("the API key cannot be checked") from error
            raise
        if key is not None and key.revoked is not None:
            raise AuthenticationError("API key revoked" + (f": {key.revoked_reason}" if key.revoked_reason else ""))
        limits: dict[int, dict[str, int | None]] = {}
        for router_id, limit_type, value in limit_rows:
            limits.setdefault(router_id, {})[limit_type] = value
        holders = [("key", key), ("user", user), ("organization", organization)]
        budgets = tuple(
            Budget(holder, holder_row.id, getattr(holder_row, "name", None) or getattr(holder_row, "email", ""),
                   holder_row.budget_nanos, holder_row.budget_period, holder_row.period_start)
            for holder, holder_row in holders if holder_row is not None and holder_row.budget_nanos is not None
        )
        return Principal(
            user_id=user.id,
            key_id=key.id if key is not None else None,
            key_name=key.name if key is not None else key_name,
            role_id=user.role_id,
            organization_id=user.organization_id,
            permissions=frozenset(permissions or ()),
            limits=limits,
            priority=user.priority,
            budgets=budgets,
            expires=_earliest(key.expires if key is not None else None, user.expires),
            loaded_at=loaded_at,
            key_limits=(key.limits or None) if key is not None else None,
            key_models=frozenset(key.models) if key is not None and key.models is not None else None,
            organization_models=frozenset(organization.models) if organization is not None and organization.models is not None else None,
            use_cache=key.use_cache if key is not None else True,
            keep_conversations=bool(role_keeps or (key is not None and key.keep_conversations)
                                    or (organization is not None and organization.keep_conversations)),
        )


def _bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise AuthenticationError("Missing API key: send 'Authorization: Bearer <key>'")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthenticationError("Invalid authorization header: expected 'Bearer <key>'")
    return token
