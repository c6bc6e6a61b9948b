"""Routers: a public model name (and aliases) over providers of one model type."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api.common.db import commit_or_conflict, flush_or_conflict
from api.common.listing import PageRequest, fetch_page
from api.common.schemas import to_unix
from api.db.base import utcnow
from api.db.tables import Router, RouterAlias
from api.errors import ConflictError, NotFoundError
from api.catalog.catalog import ModelCatalog
from api.catalog.schemas import RouterCreate, RouterOut, RouterUpdate

ORDER_COLUMNS = {"id": Router.id, "name": Router.name, "created": Router.created, "updated": Router.updated}
MICROS = Decimal(1_000_000)


def price_to_micros(price: Decimal) -> int:
    return int(price * MICROS)


def micros_to_price(micros: int) -> float:
    return float(Decimal(micros) / MICROS)


def router_out(router: Router) -> RouterOut:
    sizes = {p.vector_size for p in router.providers if p.vector_size}
    lengths = [p.max_context_length for p in router.providers if p.max_context_length]
    return RouterOut(
        id=router.id, name=router.name, type=router.type, aliases=[a.alias for a in router.aliases],
        load_balancing_strategy=router.load_balancing_strategy,
        vector_size=sizes.pop() if len(sizes) == 1 else None, max_context_length=min(lengths) if lengths else None,
        cost_prompt_tokens=micros_to_price(router.cost_prompt_micros),
        cost_completion_tokens=micros_to_price(router.cost_completion_micros),
        cache_ttl_seconds=router.cache_ttl_seconds, cache_any_temperature=router.cache_any_temperature,
        cost_cache_hit=micros_to_price(router.cost_cache_hit_micros),
        providers=len(router.providers), created=to_unix(router.created), updated=to_unix(router.updated),
    )


async def get_router_model(session: AsyncSession, router_id: int) -> Router:
    router = await session.get(Router, router_id)
    if router is None:
        raise NotFoundError(f"Router {router_id} not found")
    return router


async def _check_names_free(session: AsyncSession, names: list[str], router_id: int | None) -> None:
    """A name or alias may designate one router only."""
    taken_by_name = select(Router.name).where(Router.name.in_(names))
    taken_by_alias = select(RouterAlias.alias).where(RouterAlias.alias.in_(names))
    if router_id is not None:
        taken_by_name = taken_by_name.where(Router.id != router_id)
        taken_by_alias = taken_by_alias.where(RouterAlias.router_id != router_id)
    taken = set((await session.execute(taken_by_name)).scalars()) | set((await session.execute(taken_by_alias)).scalars())
    if taken:
        raise ConflictError(f"Model name(s) already used by another router: {', '.join(sorted(taken))}")


NAME_TAKEN = "A router name or alias is already in use"


async def create_router(session: AsyncSession, catalog: ModelCatalog, body: RouterCreate) -> int:
    if body.name in body.aliases:
        raise ConflictError("A router's aliases must differ from its name")
    await _check_names_free(session, [body.name, *body.aliases], None)
    router = Router(
        name=body.name, type=body.type.value, load_balancing_strategy=body.load_balancing_strategy.value,
        cost_prompt_micros=price_to_micros(body.cost_prompt_tokens),
        cost_completion_micros=price_to_micros(body.cost_completion_tokens),
        cache_ttl_seconds=body.cache_ttl_seconds, cache_any_temperature=body.cache_any_temperature,
        cost_cache_hit_micros=price_to_micros(body.cost_cache_hit),
        aliases=[RouterAlias(alias=a) for a in body.aliases],
    )
    session.add(router)
    await commit_or_conflict(session, NAME_TAKEN)
    await catalog.reload()  # this process serves it at once; the others at their next refresh
    return router.id


async def get_router(session: AsyncSession, router_id: int) -> RouterOut:
    # Read anew, relationships included: the session may hold it from its creation, unloaded.
    router = await session.get(Router, router_id, populate_existing=True)
    if router is None:
        raise NotFoundError(f"Router {router_id} not found")
    return router_out(router)


async def list_routers(session: AsyncSession, page: PageRequest) -> tuple[list[RouterOut], int]:
    rows, total = await fetch_page(session, select(Router), ORDER_COLUMNS[page.order_by], Router.id, page)
    return [router_out(row[0]) for row in rows], total


async def update_router(session: AsyncSession, catalog: ModelCatalog, router_id: int, body: RouterUpdate) -> None:
    router = await session.get(Router, router_id, with_for_update=True, populate_existing=True)
    if router is None:
        raise NotFoundError(f"Router {router_id} not found")
    name = body.name or router.name
    aliases = body.aliases if body.aliases is not None else [a.alias for a in router.aliases]
    if name in aliases:
        raise ConflictError("A router's aliases must differ from its name")
    await _check_names_free(session, [name, *aliases], router_id)
    if body.type is not None and body.type.value != router.type and router.providers:
        raise ConflictError("Cannot change the type of a router that has providers: remove them first")
    router.name = name
    if body.type is not None:
        router.type = body.type.value
    if body.aliases is not None:
        router.aliases.clear()
        await flush_or_conflict(session, NAME_TAKEN)
        router.aliases.extend(RouterAlias(alias=a) for a in body.aliases)
    if body.load_balancing_strategy is not None:
        router.load_balancing_strategy = body.load_balancing_strategy.value
    if body.cost_prompt_tokens is not None:
        router.cost_prompt_micros = price_to_micros(body.cost_prompt_tokens)
    if body.cost_completion_tokens is not None:
        router.cost_completion_micros = price_to_micros(body.cost_completion_tokens)
    if "cache_ttl_seconds" in body.model_fields_set:
        router.cache_ttl_seconds = body.cache_ttl_seconds
    if body.cache_any_temperature is not None:
        router.cache_any_temperature = body.cache_any_temperature
    if body.cost_cache_hit is not None:
        router.cost_cache_hit_micros = price_to_micros(body.cost_cache_hit)
    router.updated = utcnow()
    await commit_or_conflict(session, NAME_TAKEN)
    await catalog.reload()


async def delete_router(session: AsyncSession, catalog: ModelCatalog, router_id: int) -> None:
    """Delete the router with its providers and aliases."""
    router = await get_router_model(session, router_id)
    await session.delete(router)
    await session.commit()
    await catalog.reload()
