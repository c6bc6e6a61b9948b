"""The Redis client every replica uses for shared state."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
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
    # from_pool: closing the client closes the pool's connections too (a pool passed as
    # `connection_pool=` is left open, its connections kept until garbage collection).
    return Redis.from_pool(pool)
