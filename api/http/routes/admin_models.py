"""/v1/admin/routers and /v1/admin/providers. Every change is reloaded into the catalog at once."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response

from api.common.listing import PageRequest
from api.common.schemas import CLIENT_ERRORS, ListPage
from api.http.deps import Admin, CatalogDep, page_params, require_admin, SecretsDep, Session, UpstreamsDep
from api.http.params import PathId, QueryId, one_of
from api.catalog import provider_admin
from api.catalog import router_admin
from api.catalog.schemas import (
    ProviderCreate,
    ProviderOut,
    ProviderUpdate,
    RouterCreate,
    RouterList,
    RouterOut,
    RouterUpdate,
)

routes = APIRouter(prefix="/v1/admin", dependencies=[Depends(require_admin)], responses=CLIENT_ERRORS)

# OpenGateLLM's router list reads sort_by and sort_order: both those and order_by/order_direction work.
RouterPage = Annotated[PageRequest, Depends(page_params("RouterOrderBy", router_admin.ORDER_COLUMNS, sort_names=True))]
ProviderPage = Annotated[PageRequest, Depends(page_params("ProviderOrderBy", provider_admin.ORDER_COLUMNS))]


@routes.post("/routers", status_code=201, tags=["admin: routers"])
async def create_router(body: RouterCreate, session: Session, catalog: CatalogDep) -> RouterOut:
    """The router created, whole, as OpenGateLLM answers (its `id` where Tollgate's `{"id"}` had it)."""
    router_id = await router_admin.create_router(session, catalog, body)
    return await router_admin.get_router(session, router_id)


@routes.get("/routers", tags=["admin: routers"])
async def list_routers(session: Session, page: RouterPage) -> RouterList:
    data, total = await router_admin.list_routers(session, page)
    return RouterList(data=data, total=total, offset=page.offset, limit=page.limit)


@routes.get("/routers/{router_id}", tags=["admin: routers"])
async def get_router(router_id: PathId, session: Session) -> RouterOut:
    return await router_admin.get_router(session, router_id)


@routes.patch("/routers/{router_id}", status_code=204, tags=["admin: routers"])
async def update_router(router_id: PathId, body: RouterUpdate, session: Session, catalog: CatalogDep) -> Response:
    await router_admin.update_router(session, catalog, router_id, body)
    return Response(status_code=204)


@routes.delete("/routers/{router_id}", status_code=204, tags=["admin: routers"])
async def delete_router(router_id: PathId, session: Session, catalog: CatalogDep) -> Response:
    await router_admin.delete_router(session, catalog, router_id)
    return Response(status_code=204)


@routes.post("/providers", status_code=201, tags=["admin: providers"])
async def create_provider(
    body: ProviderCreate, session: Session, catalog: CatalogDep, upstreams: UpstreamsDep, secrets: SecretsDep,
    caller: Admin
) -> ProviderOut:
    """The provider created, whole, as OpenGateLLM answers (with `router_id`; its `id` where
    Tollgate's `{"id"}` had it)."""
    return await provider_admin.create_provider(session, catalog, upstreams, secrets, body, caller.user_id)


@routes.get("/providers", tags=["admin: providers"])
async def list_providers(
    session: Session, secrets: SecretsDep, page: ProviderPage, router: QueryId = None, router_id: QueryId = None
) -> ListPage[ProviderOut]:
    """Filtered by `router`, or `router_id` (the name of a provider's router in its answers)."""
    data, total = await provider_admin.list_providers(session, secrets, page, one_of(("router", router), ("router_id", router_id)))
    return ListPage(data=data, total=total)


@routes.get("/providers/{provider_id}", tags=["admin: providers"])
async def get_provider(provider_id: PathId, session: Session, secrets: SecretsDep) -> ProviderOut:
    return await provider_admin.get_provider(session, secrets, provider_id)


@routes.patch("/providers/{provider_id}", status_code=204, tags=["admin: providers"])
async def update_provider(
    provider_id: PathId, body: ProviderUpdate, session: Session, catalog: CatalogDep, secrets: SecretsDep
) -> Response:
    await provider_admin.update_provider(session, catalog, secrets, provider_id, body)
    return Response(status_code=204)


@routes.delete("/providers/{provider_id}", status_code=204, tags=["admin: providers"])
async def delete_provider(provider_id: PathId, session: Session, catalog: CatalogDep) -> Response:
    await provider_admin.delete_provider(session, catalog, provider_id)
    return Response(status_code=204)
