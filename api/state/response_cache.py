"""Where cached answers live: Redis when configured (shared by every replica), else an LRU in
this process. Both bound what they hold: an answer larger than `max_entry_bytes` is not kept;
the LRU holds at most `max_bytes` (the oldest used go first); Redis keeps each answer for its
time to live only (and its own `maxmemory` policy bounds the rest)."""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Protocol

from redis.asyncio import Redis

from api.state.redis_client import REDIS_DOWN, redis_unavailable


class ResponseCache(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl_seconds: int) -> None: ...


class MemoryResponseCache:
    def __init__(self, max_bytes: int, max_entry_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._max_entry_bytes = max_entry_bytes
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._bytes = 0

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        value, expires = entry
        if expires <= time.monotonic():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return value

    async def put(self, key: str, value: bytes, ttl_seconds: int) -> None:
        if len(value) > self._max_entry_bytes:
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (value, time.monotonic() + ttl_seconds)
        self._bytes += len(value)
        while self._bytes > self._max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        value, _ = self._entries.pop(key)
        self._bytes -= len(value)


class RedisResponseCache:
    def __init__(self, redis: Redis, key_prefix: str, max_entry_bytes: int) -> None:
        self._redis = redis
        self._prefix = key_prefix + "cache:"
        self._max_entry_bytes = max_entry_bytes

    async def get(self, key: str) -> bytes | None:
        try:
            return await self._redis.get(self._prefix + key)
        except REDIS_DOWN as error:
            raise redis_unavailable() from error

    async def put(self, key: str, value: bytes, ttl_seconds: int) -> None:
        if len(value) > self._max_entry_bytes:
            return
        try:
            await self._redis.set(self._prefix + key, value, ex=ttl_seconds)
        except REDIS_DOWN:
            pass  # an answer not kept is a later miss, never a wrong answer
