"""/v1/admin/routers and /v1/admin/providers. Every change is reloaded into the catalog at once."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

from api.common.listing import PageRequest
from api.common.schemas import CLIENT_ERRORS, MAX_ID, ListPage
from api.http.deps import Admin, Context, Session, page_params, require_admin
from api.catalog import providers
from api.catalog import routers
from api.catalog.schemas import (
    ProviderCreate,
    ProviderOut,
    ProviderUpdate,
    RouterCreate,
    RouterOut,
    RouterUpdate,
)
from api.identity.schemas import Created

router = APIRouter(prefix="/v1/admin", dependencies=[Depends(require_admin)], responses=CLIENT_ERRORS)

PathId = Annotated[int, Path(ge=1, le=MAX_ID)]
RouterPage = Annotated[PageRequest, Depends(page_params("RouterOrderBy", routers.ORDER_COLUMNS))]
ProviderPage = Annotated[PageRequest, Depends(page_params("ProviderOrderBy", providers.ORDER_COLUMNS))]


@router.post("/routers", status_code=201, tags=["admin: routers"])
async def create_router(body: RouterCreate, session: Session, context: Context) -> Created:
    router_id = await routers.create_router(session, body)
    await context.catalog.reload()
    return Created(id=router_id)


@router.get("/routers", tags=["admin: routers"])
async def list_routers(session: Session, page: RouterPage) -> ListPage[RouterOut]:
    data, total = await routers.list_routers(session, page)
    return ListPage(data=data, total=total)


@router.get("/routers/{router_id}", tags=["admin: routers"])
async def get_router(router_id: PathId, session: Session) -> RouterOut:
    return await routers.get_router(session, router_id)


@router.patch("/routers/{router_id}", status_code=204, tags=["admin: routers"])
async def update_router(router_id: PathId, body: RouterUpdate, session: Session, context: Context) -> Response:
    await routers.update_router(session, router_id, body)
    await context.catalog.reload()
    return Response(status_code=204)


@router.delete("/routers/{router_id}", status_code=204, tags=["admin: routers"])
async def delete_router(router_id: PathId, session: Session, context: Context) -> Response:
    await routers.delete_router(session, router_id)
    await context.catalog.reload()
    return Response(status_code=204)


@router.post("/providers", status_code=201, tags=["admin: providers"])
async def create_provider(body: ProviderCreate, session: Session, context: Context, caller: Admin) -> Created:
    provider_id = await providers.create_provider(session, context.upstreams, context.secrets, body, caller.user_id)
    await context.catalog.reload()
    return Created(id=provider_id)


@router.get("/providers", tags=["admin: providers"])
async def list_providers(
    session: Session, context: Context, page: ProviderPage, router: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None
) -> ListPage[ProviderOut]:
    data, total = await providers.list_providers(session, context.secrets, page, router)
    return ListPage(data=data, total=total)


@router.get("/providers/{provider_id}", tags=["admin: providers"])
async def get_provider(provider_id: PathId, session: Session, context: Context) -> ProviderOut:
    return await providers.get_provider(session, context.secrets, provider_id)


@router.patch("/providers/{provider_id}", status_code=204, tags=["admin: providers"])
async def update_provider(provider_id: PathId, body: ProviderUpdate, session: Session, context: Context) -> Response:
    await providers.update_provider(session, context.secrets, provider_id, body)
    await context.catalog.reload()
    return Response(status_code=204)


@router.delete("/providers/{provider_id}", status_code=204, tags=["admin: providers"])
async def delete_provider(provider_id: PathId, session: Session, context: Context) -> Response:
    await providers.delete_provider(session, provider_id)
    await context.catalog.reload()
    return Response(status_code=204)
