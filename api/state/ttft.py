"""Each provider's observed time to first token, in process memory or in Redis.

A reading is a moving average of a provider's recent times to first token (milliseconds): each
new observation moves it `SMOOTHING` of the way, so one slow answer does not condemn a provider
that is usually fast, and a provider that slows down is seen within a few calls. A reading is
forgotten `window` seconds after its last observation: a provider passed over for being slow
gets no calls, so nothing would ever show it has recovered; once forgotten, it is tried again.

In Redis the reading is shared by every replica (updated by a script, atomically), so a
provider one replica found slow is passed over by all of them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from typing import Protocol

from redis.asyncio import Redis

from api.state.provider_values import ProviderValues
from api.state.redis_client import REDIS_DOWN

logger = logging.getLogger("tollgate.state")

# The weight of a new observation in the average.
SMOOTHING = 0.3


def smoothed(previous: float | None, observed: float) -> float:
    return observed if previous is None else previous + SMOOTHING * (observed - previous)


class TtftTracker(Protocol):
    """Observations never raise (a lost one is logged); reads raise DependencyUnavailableError
    when the store cannot be reached."""

    async def observe(self, provider_id: int, milliseconds: float) -> None: ...

    async def readings(self, provider_ids: Iterable[int]) -> dict[int, float]:
        """The current reading of each provider that has one (milliseconds)."""
        ...


class MemoryTtftTracker:
    def __init__(self, window_seconds: float) -> None:
        self._window = window_seconds
        self._readings: dict[int, tuple[float, float]] = {}  # provider -> (reading, forgotten at)

    def _current(self, provider_id: int, now: float) -> float | None:
        reading = self._readings.get(provider_id)
        return reading[0] if reading is not None and reading[1] > now else None

    async def observe(self, provider_id: int, milliseconds: float) -> None:
        now = time.monotonic()
        self._readings[provider_id] = (smoothed(self._current(provider_id, now), milliseconds), now + self._window)

    async def readings(self, provider_ids: Iterable[int]) -> dict[int, float]:
        now = time.monotonic()
        current = {pid: self._current(pid, now) for pid in provider_ids}
        return {pid: value for pid, value in current.items() if value is not None}


_OBSERVE = """
local previous = tonumber(redis.call('GET', KEYS[1]))
local observed = tonumber(ARGV[1])
local reading = observed
if previous then reading = previous + tonumber(ARGV[2]) * (observed - previous) end
redis.call('SET', KEYS[1], tostring(reading), 'PX', ARGV[3])
return tostring(reading)
"""


class RedisTtftTracker:
    # Readings made by other replicas are seen within this delay; this process's own at once.
    READ_CACHE_SECONDS = 0.25

    def __init__(self, redis: Redis, key_prefix: str, window_seconds: float) -> None:
        self._redis = redis
        self._prefix = key_prefix
        self._window_ms = max(1, int(window_seconds * 1000))
        self._observe = redis.register_script(_OBSERVE)
        self._values = ProviderValues(redis, self._key, self.READ_CACHE_SECONDS)

    def _key(self, provider_id: int) -> str:
        return f"{self._prefix}ttft:{provider_id}"

    async def observe(self, provider_id: int, milliseconds: float) -> None:
        self._values.forget()
        try:
            await self._observe(keys=[self._key(provider_id)], args=[repr(milliseconds), repr(SMOOTHING), self._window_ms])
        except REDIS_DOWN as error:
            # The call itself went through; only this observation is lost.
            logger.warning("time to first token of provider %d not recorded (%s: %s)",
                           provider_id, type(error).__name__, error)

    async def readings(self, provider_ids: Iterable[int]) -> dict[int, float]:
        return {pid: float(value) for pid, value in (await self._values.read(provider_ids)).items()}
