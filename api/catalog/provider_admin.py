"""Providers: the upstreams behind a router. Checked when added; keys encrypted at rest."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api.common.db import commit_or_conflict
from api.common.listing import PageRequest, fetch_page
from api.common.schemas import to_unix
from api.db.base import utcnow
from api.db.tables import Provider
from api.errors import InvalidRequestError, NotFoundError
from api.catalog.catalog import ModelCatalog
from api.catalog.crypto import SecretBox, mask_secret
from api.catalog.router_admin import get_router_model
from api.catalog.schemas import ProviderCreate, ProviderOut, ProviderUpdate
from api.providers import ProbeResult, Upstream, UpstreamCheckError
from api.providers.base import normalise_base_url
from api.providers.sessions import UpstreamSessions

ORDER_COLUMNS = {"id": Provider.id, "model_name": Provider.model_name, "created": Provider.created}

DUPLICATE_PROVIDER = "This router already has a provider for that url and model"

# TEI serves embeddings and reranking only; Anthropic and Bedrock chat only.
_TEI_TYPES = {"text-embeddings-inference", "text-classification"}
_CHAT_TYPES = {"text-generation", "image-text-to-text"}


def provider_out(provider: Provider, secrets: SecretBox) -> ProviderOut:
    return ProviderOut(
        id=provider.id, router_id=provider.router_id, router=provider.router_id, user_id=provider.user_id, type=provider.type, url=provider.url,
        key=mask_secret(secrets.decrypt(provider.key_encrypted)), timeout=provider.timeout,
        model_name=provider.model_name, model_hosting_zone=provider.model_hosting_zone,
        model_total_params=provider.model_total_params, model_active_params=provider.model_active_params,
        qos_metric=provider.qos_metric, qos_limit=provider.qos_limit, vector_size=provider.vector_size,
        max_context_length=provider.max_context_length, region=provider.region, api_version=provider.api_version, created=to_unix(provider.created), updated=to_unix(provider.updated),
    )


async def _get(session: AsyncSession, provider_id: int) -> Provider:
    provider = await session.get(Provider, provider_id)
    if provider is None:
        raise NotFoundError(f"Provider {provider_id} not found")
    return provider


async def probe_provider(
    sessions: UpstreamSessions, provider_type: str, upstream: Upstream, router_type: str, timeout: int
) -> ProbeResult:
    adapter = sessions.adapter_for(provider_type)
    try:
        return await adapter.probe(sessions.for_url(upstream.url), upstream, router_type, min(timeout, 30))
    except UpstreamCheckError as exc:
        raise InvalidRequestError(f"Provider check failed: {exc}") from exc


async def create_provider(
    session: AsyncSession, catalog: ModelCatalog, sessions: UpstreamSessions, secrets: SecretBox, body: ProviderCreate,
    user_id: int | None,
) -> ProviderOut:
    router = await get_router_model(session, body.router)
    if body.type.value == "tei" and router.type not in _TEI_TYPES:
        raise InvalidRequestError(f"A tei provider cannot serve a {router.type} router")
    if body.type.value in ("anthropic", "bedrock") and router.type not in _CHAT_TYPES:
        raise InvalidRequestError(f"A {body.type.value} provider cannot serve a {router.type} router")
    if (body.qos_metric is None) != (body.qos_limit is None):
        raise InvalidRequestError("qos_metric and qos_limit go together")
    url = normalise_base_url(str(body.url))
    upstream = Upstream(url, body.key, body.model_name, body.region, body.api_version)
    probe = await probe_provider(sessions, body.type.value, upstream, router.type, body.timeout)
    existing = {p.vector_size for p in router.providers if p.vector_size}
    if probe.vector_size and existing and probe.vector_size not in existing:
        raise InvalidRequestError(
            f"This provider's vectors have {probe.vector_size} dimensions, the router's others {existing.pop()}"
        )
    provider = Provider(
        router_id=router.id, user_id=user_id, type=body.type.value, url=url, key_encrypted=secrets.encrypt(body.key),
        timeout=body.timeout, model_name=body.model_name, model_hosting_zone=body.model_hosting_zone,
        model_total_params=body.model_total_params, model_active_params=body.model_active_params,
        qos_metric=body.qos_metric.value if body.qos_metric else None, qos_limit=body.qos_limit,
        vector_size=probe.vector_size, max_context_length=probe.max_context_length, region=body.region,
        api_version=body.api_version,
    )
    session.add(provider)
    router.updated = utcnow()
    await commit_or_conflict(session, DUPLICATE_PROVIDER)
    await catalog.reload()  # this process serves it at once; the others at their next refresh
    return provider_out(provider, secrets)


async def get_provider(session: AsyncSession, secrets: SecretBox, provider_id: int) -> ProviderOut:
    return provider_out(await _get(session, provider_id), secrets)


async def list_providers(
    session: AsyncSession, secrets: SecretBox, page: PageRequest, router_id: int | None
) -> tuple[list[ProviderOut], int]:
    query = select(Provider)
    if router_id is not None:
        query = query.where(Provider.router_id == router_id)
    rows, total = await fetch_page(session, query, ORDER_COLUMNS[page.order_by], Provider.id, page)
    return [provider_out(row[0], secrets) for row in rows], total


async def update_provider(
    session: AsyncSession, catalog: ModelCatalog, secrets: SecretBox, provider_id: int, body: ProviderUpdate
) -> None:
    provider = await _get(session, provider_id)
    changes = body.model_dump(exclude_unset=True)
    if "router" in changes and body.router is not None:
        target = await get_router_model(session, body.router)
        current = await get_router_model(session, provider.router_id)
        if target.type != current.type:
            raise InvalidRequestError(f"Router {target.id} is a {target.type} router, this provider serves {current.type}")
        provider.router_id = target.id
    for field in ("timeout", "model_hosting_zone", "model_total_params", "model_active_params", "qos_limit"):
        if field in changes and changes[field] is not None:
            setattr(provider, field, changes[field])
    for field in ("region", "api_version"):  # null takes it back (bedrock: the url's region; azure: the default)
        if field in changes:
            setattr(provider, field, changes[field])
    if "qos_metric" in changes:
        provider.qos_metric = body.qos_metric.value if body.qos_metric else None
        if body.qos_metric is None:
            provider.qos_limit = None
    if "key" in changes:
        provider.key_encrypted = secrets.encrypt(body.key)
    if (provider.qos_metric is None) != (provider.qos_limit is None):
        raise InvalidRequestError("qos_metric and qos_limit go together")
    provider.updated = utcnow()
    await commit_or_conflict(session, DUPLICATE_PROVIDER)
    await catalog.reload()


async def delete_provider(session: AsyncSession, catalog: ModelCatalog, provider_id: int) -> None:
    await session.delete(await _get(session, provider_id))
    await session.commit()
    await catalog.reload()
