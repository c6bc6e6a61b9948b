"""Rate-limit windows with all-or-nothing check-and-count, in process memory or in Redis.

A request is checked against several windows at once (rpm, rpd, tpm, tpd). Either every
window has room and all are counted, or none is counted and the caller learns which window
refused and when it resets. In Redis this is one Lua script (one round trip) using Redis' own
clock, so every replica shares the same windows and the same counts.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis


@dataclass(frozen=True)
class WindowCheck:
    key: str  # the counter, without its window index
    limit: int
    window_seconds: int
    amount: int  # what this request adds (1 request, or its estimated tokens)


@dataclass(frozen=True)
class WindowState:
    key: str  # with its window index: settlement adjusts exactly this counter
    limit: int
    used: int
    reset_in: float


@dataclass(frozen=True)
class Admission:
    admitted: bool
    windows: tuple[WindowState, ...]  # admitted: every window; refused: the refusing one

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(max((w.reset_in for w in self.windows), default=1)))


class LimitStore(Protocol):
    async def admit(self, checks: list[WindowCheck]) -> Admission: ...

    async def peek(self, checks: list[WindowCheck]) -> list[WindowState]:
        """The current windows' counts, counting nothing."""
        ...

    async def adjust(self, key: str, delta: int) -> None:
        """Correct a counted amount (settling an estimate with the real figure)."""
        ...


class MemoryLimitStore:
    def __init__(self) -> None:
        self._counts: dict[str, tuple[int, float]] = {}

    def _sweep(self, now: float) -> None:
        if len(self._counts) > 100_000:
            self._counts = {k: v for k, v in self._counts.items() if v[1] > now}

    async def admit(self, checks: list[WindowCheck]) -> Admission:
        now = time.time()
        self._sweep(now)
        states = []
        for check in checks:
            index = int(now // check.window_seconds)
            key = f"{check.key}:{index}"
            used = self._counts.get(key, (0, 0.0))[0]
            reset_in = (index + 1) * check.window_seconds - now
            if used + check.amount > check.limit:
                return Admission(False, (WindowState(key, check.limit, used, reset_in),))
            states.append((check, key, used, reset_in))
        admitted = []
        for check, key, used, reset_in in states:
            self._counts[key] = (used + check.amount, now + reset_in)
            admitted.append(WindowState(key, check.limit, used + check.amount, reset_in))
        return Admission(True, tuple(admitted))

    async def peek(self, checks: list[WindowCheck]) -> list[WindowState]:
        now = time.time()
        states = []
        for check in checks:
            index = int(now // check.window_seconds)
            key = f"{check.key}:{index}"
            used = self._counts.get(key, (0, 0.0))[0]
            states.append(WindowState(key, check.limit, used, (index + 1) * check.window_seconds - now))
        return states

    async def adjust(self, key: str, delta: int) -> None:
        if key in self._counts:
            used, expires = self._counts[key]
            self._counts[key] = (used + delta, expires)


_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n = #KEYS
local keys, used, resets = {}, {}, {}
for i = 1, n do
  local limit = tonumber(ARGV[3 * i - 2])
  local window = tonumber(ARGV[3 * i - 1])
  local amount = tonumber(ARGV[3 * i])
  local index = math.floor(now / window)
  local key = KEYS[i] .. ':' .. index
  local current = tonumber(redis.call('GET', key) or '0')
  local reset_ms = math.ceil(((index + 1) * window - now) * 1000)
  if current + amount > limit then
    return {0, i, key, current, reset_ms}
  end
  keys[i], used[i], resets[i] = key, current + amount, reset_ms
end
local out = {1}
for i = 1, n do
  redis.call('INCRBY', keys[i], tonumber(ARGV[3 * i]))
  redis.call('PEXPIRE', keys[i], resets[i] + 60000)
  table.insert(out, keys[i])
  table.insert(out, used[i])
  table.insert(out, resets[i])
end
return out
"""


_ADJUST = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('INCRBY', KEYS[1], tonumber(ARGV[1]))
end
return 0
"""


class RedisLimitStore:
    def __init__(self, redis: Redis, key_prefix: str) -> None:
        self._redis = redis
        self._prefix = key_prefix + "limit:"
        self._admit = redis.register_script(_ADMIT)
        self._adjust = redis.register_script(_ADJUST)

    async def admit(self, checks: list[WindowCheck]) -> Admission:
        args: list[int] = []
        for check in checks:
            args += [check.limit, check.window_seconds, check.amount]
        result = await self._admit(keys=[self._prefix + c.key for c in checks], args=args)
        if int(result[0]) == 0:
            index = int(result[1]) - 1
            state = WindowState(_text(result[2]), checks[index].limit, int(result[3]), int(result[4]) / 1000)
            return Admission(False, (state,))
        states = tuple(
            WindowState(_text(result[1 + 3 * i]), check.limit, int(result[2 + 3 * i]), int(result[3 + 3 * i]) / 1000)
            for i, check in enumerate(checks)
        )
        return Admission(True, states)

    async def peek(self, checks: list[WindowCheck]) -> list[WindowState]:
        if not checks:
            return []
        now = time.time()  # only for display: admission itself uses Redis' clock
        keys, resets = [], []
        for check in checks:
            index = int(now // check.window_seconds)
            keys.append(f"{self._prefix}{check.key}:{index}")
            resets.append((index + 1) * check.window_seconds - now)
        values = await self._redis.mget(keys)
        return [
            WindowState(key, check.limit, int(value or 0), reset)
            for key, check, value, reset in zip(keys, checks, values, resets, strict=True)
        ]

    async def adjust(self, key: str, delta: int) -> None:
        # `key` came back from admit() with its prefix. If its window is over, the counter is
        # gone and there is nothing left to correct.
        if delta:
            await self._adjust(keys=[key], args=[delta])


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
