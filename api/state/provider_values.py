"""One Redis key per provider, read for a set of providers with one MGET and kept briefly.

The gateway reads such values (cooldowns, time-to-first-token readings) for every call: a
short in-process cache turns that into one round trip per set of providers every `seconds`,
not one per call. Values written by other replicas are seen within that delay; a process sees
its own at once, as it calls `forget` when it writes one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from redis.asyncio import Redis

from api.state.redis_client import REDIS_DOWN, redis_unavailable

# Distinct sets of providers remembered at most; beyond, the cache starts again.
_MAX_SETS = 10_000


class ProviderValues:
    def __init__(self, redis: Redis, key_of: Callable[[int], str], seconds: float) -> None:
        self._redis = redis
        self._key_of = key_of
        self._seconds = seconds
        self._cache: dict[frozenset[int], tuple[float, dict[int, bytes]]] = {}

    def forget(self) -> None:
        self._cache.clear()

    async def read(self, provider_ids: Iterable[int]) -> dict[int, bytes]:
        """The value of each provider that has one; DependencyUnavailableError when Redis is down."""
        ids = frozenset(provider_ids)
        if not ids:
            return {}
        now = time.monotonic()
        cached = self._cache.get(ids)
        if cached is not None and now - cached[0] < self._seconds:
            return cached[1]
        ordered = list(ids)
        try:
            values = await self._redis.mget([self._key_of(pid) for pid in ordered])
        except REDIS_DOWN as error:
            raise redis_unavailable() from error
        result = {pid: value for pid, value in zip(ordered, values, strict=True) if value is not None}
        if len(self._cache) >= _MAX_SETS:
            self._cache.clear()
        self._cache[ids] = (now, result)
        return result
