"""Pooled aiohttp sessions, one per upstream host, built by the lifespan and closed with it."""

from __future__ import annotations

from urllib.parse import urlsplit

import aiohttp

from api.providers.base import ProviderAdapter
from api.providers.registry import build_adapters


class UpstreamSessions:
    """How this app reaches providers: a pooled session per host, and the adapter of each type."""

    def __init__(self, connections_per_host: int = 256) -> None:
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._connections_per_host = connections_per_host
        self._adapters = build_adapters()

    def adapter_for(self, provider_type: str) -> ProviderAdapter:
        return self._adapters[provider_type]

    def for_url(self, url: str) -> aiohttp.ClientSession:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        session = self._sessions.get(origin)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(limit=self._connections_per_host, ttl_dns_cache=300, enable_cleanup_closed=True)
            # No total timeout here: each call sets its own from the provider's `timeout`. No
            # cookies: the session serves every caller, and a provider's cookie (a login, a load
            # balancer's stickiness) would go out with everyone's calls.
            session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None), auto_decompress=True,
                                            cookie_jar=aiohttp.DummyCookieJar())
            self._sessions[origin] = session
        return session

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()
