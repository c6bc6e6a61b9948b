"""The in-memory catalog of routers and providers that the hot path reads.

Built from the database at start, rebuilt after every change made through this process, and
re-read every `settings.models_refresh_seconds` so changes made through other replicas arrive
without a restart. A request never reads routers from the database.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.db.tables import Router
from api.catalog.crypto import SecretBox
from api.errors import NotFoundError
from api.providers import Upstream

logger = logging.getLogger("tollgate.models")


@dataclass(frozen=True)
class ProviderTarget:
    id: int
    router_id: int
    type: str
    url: str
    key: str | None
    timeout: int
    model_name: str
    model_hosting_zone: str
    model_total_params: float  # billions
    model_active_params: float
    qos_metric: str | None
    qos_limit: float | None
    vector_size: int | None
    max_context_length: int | None
    region: str | None = None
    api_version: str | None = None

    @property
    def upstream(self) -> Upstream:
        return Upstream(self.url, self.key, self.model_name, self.region, self.api_version)


@dataclass(frozen=True)
class RouterEntry:
    id: int
    name: str
    type: str
    aliases: tuple[str, ...]
    load_balancing_strategy: str
    cost_prompt_micros: int
    cost_completion_micros: int
    created: int
    providers: tuple[ProviderTarget, ...]
    cache_ttl_seconds: int | None = None  # the response cache: off when None
    cache_any_temperature: bool = False
    cost_cache_hit_micros: int = 0

    @property
    def max_context_length(self) -> int | None:
        lengths = [p.max_context_length for p in self.providers if p.max_context_length]
        return min(lengths) if lengths else None

    @property
    def servable(self) -> bool:
        """A router without providers can serve no call, however long a client waits: it is not
        offered in /v1/models, and a call to it is refused for that reason (`no_provider`)."""
        return bool(self.providers)

    @property
    def vector_size(self) -> int | None:
        sizes = {p.vector_size for p in self.providers if p.vector_size}
        return sizes.pop() if len(sizes) == 1 else None


def no_provider(router: RouterEntry) -> NotFoundError:
    """A 4xx, not a 503: retrying changes nothing until an administrator adds a provider."""
    return NotFoundError(f"Model '{router.name}' has no provider: it cannot serve calls until an administrator adds one")


class ModelCatalog:
    def __init__(self, session_factory: async_sessionmaker[AsyncSession], secrets: SecretBox) -> None:
        self._session_factory = session_factory
        self._secrets = secrets
        self._by_name: dict[str, RouterEntry] = {}
        self._by_id: dict[int, RouterEntry] = {}
        self._lock = asyncio.Lock()

    def resolve(self, name: str) -> RouterEntry | None:
        return self._by_name.get(name)

    def get(self, router_id: int) -> RouterEntry | None:
        return self._by_id.get(router_id)

    def routers(self) -> list[RouterEntry]:
        return sorted(self._by_id.values(), key=lambda r: r.id)

    async def reload(self) -> None:
        async with self._lock:
            async with self._session_factory() as session:
                routers = (await session.execute(select(Router))).scalars().all()
                entries = [self._entry(router) for router in routers]
            by_name: dict[str, RouterEntry] = {}
            for entry in entries:
                for name in (entry.name, *entry.aliases):
                    by_name[name] = entry
            self._by_name, self._by_id = by_name, {entry.id: entry for entry in entries}

    async def refresh(self) -> None:
        """One round of the periodic refresh: a failure is logged, and the catalog in hand kept."""
        try:
            await self.reload()
        except Exception:  # a database hiccup must not stop later refreshes
            logger.exception("could not refresh the model catalog")

    def _entry(self, router: Router) -> RouterEntry:
        providers = tuple(
            ProviderTarget(
                id=p.id, router_id=router.id, type=p.type, url=p.url, key=self._secrets.decrypt(p.key_encrypted),
                timeout=p.timeout, model_name=p.model_name, model_hosting_zone=p.model_hosting_zone,
                model_total_params=p.model_total_params, model_active_params=p.model_active_params,
                qos_metric=p.qos_metric, qos_limit=p.qos_limit, vector_size=p.vector_size,
                max_context_length=p.max_context_length, region=p.region, api_version=p.api_version,
            )
            for p in router.providers
        )
        return RouterEntry(
            id=router.id, name=router.name, type=router.type, aliases=tuple(a.alias for a in router.aliases),
            load_balancing_strategy=router.load_balancing_strategy, cost_prompt_micros=router.cost_prompt_micros,
            cost_completion_micros=router.cost_completion_micros, created=int(router.created.timestamp()),
            providers=providers, cache_ttl_seconds=router.cache_ttl_seconds,
            cache_any_temperature=router.cache_any_temperature, cost_cache_hit_micros=router.cost_cache_hit_micros,
        )
