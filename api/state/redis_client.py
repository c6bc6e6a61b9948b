"""The Redis client every replica uses for shared state."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError
from redis.exceptions import TimeoutError as RedisTimeoutError

from api.errors import DependencyUnavailableError
from api.settings import RedisSettings

# What an unreachable, restarting or stalled Redis raises (a refused or reset connection, a
# timeout, "loading the dataset"), as opposed to a bug in a command or script.
REDIS_DOWN: tuple[type[BaseException], ...] = (RedisConnectionError, RedisTimeoutError, OSError)

# Redis outages are short (a restart, a failover): a client may retry almost at once.
RETRY_AFTER_SECONDS = 2


def redis_unavailable() -> DependencyUnavailableError:
    return DependencyUnavailableError(
        "Shared state (Redis) is unavailable: limits and budgets cannot be checked; retry shortly",
        retry_after=RETRY_AFTER_SECONDS,
    )


def build_redis(settings: RedisSettings) -> Redis:
    # A blocking pool makes a burst wait briefly for a connection instead of failing the
    # request, as the default pool does once its connections are all in use. Every wait is
    # bounded by `timeout_seconds` (pool, connect, command), so an outage means a prompt 503.
    # No retries: admission scripts are not idempotent, and a script resent after a reset
    # connection could count a request twice. A dead pooled connection is replaced by the
    # pool on its next use, so the client recovers by itself once Redis is back.
    pool = BlockingConnectionPool.from_url(
        settings.url,
        max_connections=settings.max_connections,
        timeout=settings.timeout_seconds,
        socket_timeout=settings.timeout_seconds,
        socket_connect_timeout=settings.timeout_seconds,
        retry=Retry(NoBackoff(), 0),
    )
    return Redis(connection_pool=pool)


class ScriptBatcher:
    """Runs Lua scripts, sending those called in the same event-loop turn as one pipeline.

    Under load many requests reach admission and settlement together; each call on its own
    costs a socket write, a read and a trip through the connection pool, which on a busy
    gateway is where most of its Redis time goes. Batched, they share one write and one read.
    Each script still runs atomically in Redis: a pipeline is not a transaction, and none is
    needed. A lone call waits one loop turn, a few microseconds.
    """

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._pending: list[tuple[AsyncScript, list[str], list[Any], asyncio.Future[Any]]] = []
        self._sending: set[asyncio.Task[None]] = set()

    def register(self, source: str) -> AsyncScript:
        return self._redis.register_script(source)

    def submit(self, script: AsyncScript, keys: list[str], args: list[Any]) -> asyncio.Future[Any]:
        """Queue a call; the future gets its result. The call is made even if nobody waits."""
        result: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((script, keys, args, result))
        if len(self._pending) == 1:
            asyncio.get_running_loop().call_soon(self._flush)
        return result

    async def run(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        return await self.submit(script, keys, args)

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        # Kept until done: each caller awaits its own future, set by this task.
        task = asyncio.ensure_future(self._send(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[tuple[AsyncScript, list[str], list[Any], asyncio.Future[Any]]]) -> None:
        try:
            if len(batch) == 1:
                script, keys, args, _ = batch[0]
                results: list[Any] = [await script(keys=keys, args=args)]
            else:
                pipe = self._redis.pipeline(transaction=False)
                for script, keys, args, _ in batch:
                    pipe.evalsha(script.sha, len(keys), *keys, *args)
                results = await pipe.execute(raise_on_error=False)
                for index, (outcome, (script, keys, args, _)) in enumerate(zip(results, batch, strict=True)):
                    if isinstance(outcome, NoScriptError):  # Redis restarted: load it and run that call again
                        try:
                            results[index] = await script(keys=keys, args=args)
                        except Exception as error:  # noqa: BLE001  (that call only: the others ran)
                            results[index] = error
        except Exception as error:  # noqa: BLE001  (each caller gets the failure)
            for *_, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        for outcome, (*_, future) in zip(results, batch, strict=True):
            if future.done():
                continue
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)

    async def close(self) -> None:
        if self._sending:
            await asyncio.gather(*self._sending, return_exceptions=True)
