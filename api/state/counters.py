"""Fixed-window counters with one interface over process memory and Redis.

Used for login throttling now, and the base of rate limits later. In Redis the increment and
the expiry are set in one Lua script so that two replicas can never both see a fresh window.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis

from api.state.redis_client import REDIS_DOWN, redis_unavailable


@dataclass(frozen=True)
class WindowCount:
    count: int
    reset_in: float  # seconds until the window ends

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(self.reset_in))


class CounterStore(Protocol):
    async def hit(self, key: str, window_seconds: int) -> WindowCount:
        """Count one event in `key`'s current window and return the new count."""
        ...

    async def peek(self, key: str) -> WindowCount:
        """The count in `key`'s current window, without counting."""
        ...


class MemoryCounterStore:
    """Counters for a single process. The event loop runs one coroutine at a time, so no lock."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self._windows: dict[str, tuple[int, float]] = {}
        self._max_keys = max_keys

    def _current(self, key: str, now: float) -> tuple[int, float] | None:
        window = self._windows.get(key)
        if window is None or window[1] <= now:
            return None
        return window

    async def hit(self, key: str, window_seconds: int) -> WindowCount:
        now = time.monotonic()
        window = self._current(key, now)
        if window is None:
            if len(self._windows) >= self._max_keys:
                self._evict_expired(now)
            window = (0, now + window_seconds)
        count, ends = window[0] + 1, window[1]
        self._windows[key] = (count, ends)
        return WindowCount(count, ends - now)

    async def peek(self, key: str) -> WindowCount:
        now = time.monotonic()
        window = self._current(key, now)
        return WindowCount(0, 0.0) if window is None else WindowCount(window[0], window[1] - now)

    def _evict_expired(self, now: float) -> None:
        expired = [k for k, (_, ends) in self._windows.items() if ends <= now]
        for k in expired:
            del self._windows[k]
        if len(self._windows) >= self._max_keys:
            # Still full of live windows: forget the oldest rather than grow without bound.
            for k in list(self._windows)[: len(self._windows) // 10 or 1]:
                del self._windows[k]


_HIT_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {count, ttl}
"""


class RedisCounterStore:
    """When Redis cannot be reached a throttle cannot be enforced: both methods raise
    DependencyUnavailableError, and the login is refused (503) rather than let through."""

    def __init__(self, redis: Redis, key_prefix: str) -> None:
        self._redis = redis
        self._prefix = key_prefix + "counter:"
        self._hit = redis.register_script(_HIT_SCRIPT)

    async def hit(self, key: str, window_seconds: int) -> WindowCount:
        try:
            count, ttl_ms = await self._hit(keys=[self._prefix + key], args=[window_seconds * 1000])
        except REDIS_DOWN as error:
            raise redis_unavailable() from error
        return WindowCount(int(count), int(ttl_ms) / 1000)

    async def peek(self, key: str) -> WindowCount:
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.get(self._prefix + key)
                pipe.pttl(self._prefix + key)
                raw, ttl_ms = await pipe.execute()
        except REDIS_DOWN as error:
            raise redis_unavailable() from error
        if raw is None or ttl_ms <= 0:
            return WindowCount(0, 0.0)
        return WindowCount(int(raw), ttl_ms / 1000)
