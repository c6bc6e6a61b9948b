"""In-flight requests per provider, and provider cooldowns, in process memory or in Redis.

In Redis every in-flight request is a lease (a member of a sorted set scored by its expiry), so
a process that dies mid-request cannot leave a count behind: its leases simply expire.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable
from typing import NamedTuple, Protocol

from redis.asyncio import Redis

from api.state.provider_values import ProviderValues
from api.state.redis_client import REDIS_DOWN, redis_unavailable

logger = logging.getLogger("tollgate.state")


class Lease(NamedTuple):
    provider_id: int
    token: str | None  # None: not counted in the shared store (nobody reads that count)


class LoadTracker(Protocol):
    """Reads and acquisitions raise DependencyUnavailableError when the store cannot be
    reached; releases and cooldowns never raise (they are dropped and logged)."""

    async def acquire(self, provider_id: int, cap: int | None, lease_seconds: float) -> Lease | None:
        """Count one more request in flight unless `cap` are already; None when at the cap."""
        ...

    async def release(self, lease: Lease) -> None: ...

    async def in_flight(self, provider_ids: Iterable[int]) -> dict[int, int]: ...

    async def cool_down(self, provider_id: int, seconds: float) -> None: ...

    async def cooling(self, provider_ids: Iterable[int]) -> set[int]: ...


class MemoryLoadTracker:
    def __init__(self) -> None:
        self._in_flight: dict[int, int] = {}
        self._cool_until: dict[int, float] = {}

    async def acquire(self, provider_id: int, cap: int | None, lease_seconds: float) -> Lease | None:
        current = self._in_flight.get(provider_id, 0)
        if cap is not None and current >= cap:
            return None
        self._in_flight[provider_id] = current + 1
        return Lease(provider_id, "memory")

    async def release(self, lease: Lease) -> None:
        if lease.token is None:
            return
        current = self._in_flight.get(lease.provider_id, 0)
        if current <= 1:
            self._in_flight.pop(lease.provider_id, None)
        else:
            self._in_flight[lease.provider_id] = current - 1

    async def in_flight(self, provider_ids: Iterable[int]) -> dict[int, int]:
        return {pid: self._in_flight.get(pid, 0) for pid in provider_ids}

    async def cool_down(self, provider_id: int, seconds: float) -> None:
        self._cool_until[provider_id] = time.monotonic() + seconds

    async def cooling(self, provider_ids: Iterable[int]) -> set[int]:
        now = time.monotonic()
        return {pid for pid in provider_ids if self._cool_until.get(pid, 0.0) > now}


# Redis' own clock (TIME), so replicas with skewed clocks agree on lease expiries.
_NOW = "local t = redis.call('TIME')\nlocal now = tonumber(t[1]) + tonumber(t[2]) / 1000000\n"

_ACQUIRE = _NOW + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local cap = tonumber(ARGV[1])
if cap >= 0 and redis.call('ZCARD', KEYS[1]) >= cap then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 1000) + 1000)
return 1
"""

_COUNT = _NOW + """
local counts = {}
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  counts[i] = redis.call('ZCARD', key)
end
return counts
"""


class RedisLoadTracker:
    # Cooldowns set by other replicas are seen within this delay; this process's own at once.
    COOLING_CACHE_SECONDS = 0.25

    def __init__(self, redis: Redis, key_prefix: str) -> None:
        self._redis = redis
        self._prefix = key_prefix
        self._cooldowns = ProviderValues(redis, self._cooldown_key, self.COOLING_CACHE_SECONDS)
        self._acquire = redis.register_script(_ACQUIRE)
        self._count = redis.register_script(_COUNT)

    def _inflight_key(self, provider_id: int) -> str:
        return f"{self._prefix}inflight:{provider_id}"

    def _cooldown_key(self, provider_id: int) -> str:
        return f"{self._prefix}cooldown:{provider_id}"

    async def acquire(self, provider_id: int, cap: int | None, lease_seconds: float) -> Lease | None:
        token = uuid.uuid4().hex
        try:
            admitted = await self._acquire(
                keys=[self._inflight_key(provider_id)], args=[-1 if cap is None else cap, lease_seconds, token]
            )
        except REDIS_DOWN as error:
            raise redis_unavailable() from error
        return Lease(provider_id, token) if admitted else None

    async def release(self, lease: Lease) -> None:
        if lease.token is None:
            return
        try:
            await self._redis.zrem(self._inflight_key(lease.provider_id), lease.token)
        except REDIS_DOWN as error:
            # The call is over either way; its lease expires by itself.
            logger.warning("in-flight lease on provider %d not released, it will expire (%s: %s)",
                           lease.provider_id, type(error).__name__, error)

    async def in_flight(self, provider_ids: Iterable[int]) -> dict[int, int]:
        ids = list(provider_ids)
        if not ids:
            return {}
        try:
            counts = await self._count(keys=[self._inflight_key(pid) for pid in ids])
        except REDIS_DOWN as error:
            raise redis_unavailable() from error
        return dict(zip(ids, (int(c) for c in counts), strict=True))

    async def cool_down(self, provider_id: int, seconds: float) -> None:
        self._cooldowns.forget()
        try:
            await self._redis.set(self._cooldown_key(provider_id), b"1", px=max(1, int(seconds * 1000)))
        except REDIS_DOWN as error:
            # A failed provider's failover goes on; only the cooldown is lost.
            logger.warning("cooldown of provider %d not recorded (%s: %s)", provider_id, type(error).__name__, error)

    async def cooling(self, provider_ids: Iterable[int]) -> set[int]:
        """Providers cooling down: a Redis look-up at most every COOLING_CACHE_SECONDS per set of
        providers, not one per request."""
        return set(await self._cooldowns.read(provider_ids))
