"""Routers and providers from the `models:` section of config.yml, applied at every start.

Idempotent: a router is matched by name and updated to the file; a provider by (url, model
name) within its router. Routers and providers added through the API are left alone. A
provider that cannot be reached at start is still registered (and logged): the gateway's
failover and cooldown deal with it, and its metadata is learned when it is next updated.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.db.base import utcnow
from api.db.tables import Provider, Router, RouterAlias
from api.errors import InvalidRequestError
from api.catalog.crypto import SecretBox
from api.catalog.provider_admin import probe_provider
from api.catalog.router_admin import price_to_micros
from api.catalog.schemas import ModelsConfigEntry
from pydantic import ValidationError
from api.providers import ProbeResult, Upstream
from api.providers.base import normalise_base_url
from api.providers.sessions import UpstreamSessions

logger = logging.getLogger("tollgate.models")


async def seed_models(
    session_factory: async_sessionmaker[AsyncSession],
    upstreams: UpstreamSessions,
    secrets: SecretBox,
    config: list[dict[str, Any]],
) -> None:
    """Create or update the routers of config.yml's `models:` section (InvalidRequestError for
    an entry that is not a valid router with providers)."""
    for raw in config:
        try:
            entry = ModelsConfigEntry.model_validate(raw)
        except ValidationError as exc:
            raise InvalidRequestError(f"config.yml models: router {raw.get('name', '?')!r} is invalid: {exc}") from exc
        async with session_factory() as session:
            try:
                await _seed_router(session, upstreams, secrets, entry)
                await session.commit()
            except IntegrityError:
                # Another replica seeded the same router at the same moment, or a name clashes.
                await session.rollback()
                logger.warning("router '%s' from config.yml was not applied: its name or an alias is taken", entry.name)


async def _seed_router(session: AsyncSession, upstreams: UpstreamSessions, secrets: SecretBox, entry: ModelsConfigEntry) -> None:
    router = (await session.execute(select(Router).where(Router.name == entry.name))).scalar_one_or_none()
    if router is None:
        router = Router(name=entry.name, type=entry.type.value, aliases=[], providers=[])
        session.add(router)
    router.type = entry.type.value
    router.load_balancing_strategy = entry.load_balancing_strategy.value
    router.cost_prompt_micros = price_to_micros(entry.cost_prompt_tokens)
    router.cost_completion_micros = price_to_micros(entry.cost_completion_tokens)
    if sorted(a.alias for a in router.aliases) != sorted(entry.aliases):
        router.aliases.clear()
        await session.flush()
        router.aliases.extend(RouterAlias(alias=a) for a in entry.aliases)
    router.updated = utcnow()
    await session.flush()

    existing = {(p.url, p.model_name): p for p in router.providers}
    for seed in entry.providers:
        url = normalise_base_url(str(seed.url))
        provider = existing.get((url, seed.model_name))
        if provider is None:
            provider = Provider(router_id=router.id, url=url, model_name=seed.model_name)
            router.providers.append(provider)
        provider.type = seed.type.value
        provider.key_encrypted = secrets.encrypt(seed.key)
        provider.timeout = seed.timeout
        provider.model_hosting_zone = seed.model_hosting_zone
        provider.model_total_params = seed.model_total_params
        provider.model_active_params = seed.model_active_params
        provider.qos_metric = seed.qos_metric.value if seed.qos_metric else None
        provider.qos_limit = seed.qos_limit
        provider.region, provider.api_version = seed.region, seed.api_version
        upstream = Upstream(url, seed.key, seed.model_name, seed.region, seed.api_version)
        try:
            probe = await probe_provider(upstreams, seed.type.value, upstream, router.type, seed.timeout)
        except InvalidRequestError as exc:
            logger.warning("provider %s of router '%s' from config.yml: %s", url, entry.name, exc.detail)
            probe = ProbeResult()
        provider.vector_size = probe.vector_size or provider.vector_size
        provider.max_context_length = probe.max_context_length or provider.max_context_length
        provider.updated = utcnow()
