"""Rate-limit windows with all-or-nothing check-and-count, in process memory or in Redis.

A request is checked against several windows at once (rpm, rpd, tpm, tpd). Either every
window has room and all are counted, or none is counted and the caller learns which window
refused and when it resets. Counting happens in `api.quota.store`, together with the budget;
in Redis it uses Redis' own clock, so every replica shares the same windows and counts.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import NamedTuple, Protocol

from redis.asyncio import Redis

from api.state.redis_client import REDIS_DOWN, redis_unavailable


class WindowCheck(NamedTuple):
    key: str  # the counter, without its window index
    limit: int
    window_seconds: int
    amount: int  # what this request adds (1 request, or its estimated tokens)


class WindowState(NamedTuple):
    key: str  # with its window index: settlement adjusts exactly this counter
    limit: int
    used: int
    reset_in: float


# A check or a state from a tuple of its fields, made in C: a NamedTuple's own `__new__` is a
# Python function, and the quota path makes one per window, up to ten a call.
check_from_fields = partial(tuple.__new__, WindowCheck)
state_from_fields = partial(tuple.__new__, WindowState)


class Admission(NamedTuple):
    admitted: bool
    windows: tuple[WindowState, ...]  # admitted: every window; refused: the refusing one

    @property
    def retry_after(self) -> int:
        return max(1, math.ceil(max((w.reset_in for w in self.windows), default=1)))


class LimitStore(Protocol):
    """Reads the windows; counting in them is `api.quota.store`' job, with the budget."""

    async def peek(self, checks: list[WindowCheck]) -> list[WindowState]:
        """The current windows' counts, counting nothing."""
        ...


class MemoryLimitStore:
    def __init__(self) -> None:
        self._counts: dict[str, tuple[int, float]] = {}

    def _sweep(self, now: float) -> None:
        if len(self._counts) > 100_000:
            self._counts = {k: v for k, v in self._counts.items() if v[1] > now}

    def admit_now(self, checks: list[WindowCheck], count: bool = True) -> Admission:
        """Check every window; count in all of them only if all have room and `count`."""
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
        if not count:
            return Admission(True, tuple(WindowState(key, c.limit, used, reset) for c, key, used, reset in states))
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

    def adjust_now(self, key: str, delta: int) -> None:
        if key in self._counts:
            used, expires = self._counts[key]
            self._counts[key] = (used + delta, expires)


class RedisLimitStore:
    def __init__(self, redis: Redis, key_prefix: str, settled: Callable[[], Awaitable[None]] | None = None) -> None:
        """`settled`: waits for this process' settlements still on their way to Redis, so a
        read shows the calls already answered (RedisQuotaStore.flush)."""
        self._redis = redis
        self._prefix = key_prefix + "limit:"
        self._settled = settled

    async def peek(self, checks: list[WindowCheck]) -> list[WindowState]:
        if not checks:
            return []
        if self._settled is not None:
            await self._settled()
        now = time.time()  # only for display: admission itself uses Redis' clock
        keys, resets = [], []
        for check in checks:
            index = int(now // check.window_seconds)
            keys.append(f"{self._prefix}{check.key}:{index}")
            resets.append((index + 1) * check.window_seconds - now)
        try:
            values = await self._redis.mget(keys)
        except REDIS_DOWN as error:
            raise redis_unavailable() from error
        return [
            WindowState(key, check.limit, int(value or 0), reset)
            for key, check, value, reset in zip(keys, checks, values, resets, strict=True)
        ]
