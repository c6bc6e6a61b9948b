"""The Redis client every replica uses for shared state."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis

from api.settings import RedisSettings


def build_redis(settings: RedisSettings) -> Redis:
    # A blocking pool makes a burst wait briefly for a connection instead of failing the
    # request, as the default pool does once its connections are all in use.
    pool = BlockingConnectionPool.from_url(
        settings.url,
        max_connections=settings.max_connections,
        timeout=settings.timeout_seconds,
        socket_timeout=settings.timeout_seconds,
        socket_connect_timeout=settings.timeout_seconds,
    )
    return Redis(connection_pool=pool)
