"""FastAPI dependencies: hand the app's context, a DB session and the caller to the routes."""

from collections.abc import AsyncIterator, Callable, Iterable
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from api.common.listing import PageRequest
from api.common.schemas import OrderDirection
from api.calls.gateway import Gateway as GatewayService
from api.calls.pipeline import Pipeline as CallPipeline
from api.catalog.catalog import ModelCatalog
from api.http.context import AppContext
from api.rag.search import Searcher
from api.settings import Settings as AppSettings
from api.identity.principal import Principal
from api.identity.schemas import Permission


# Dependencies are `async def` even when they await nothing: FastAPI runs plain `def`
# dependencies in a thread pool, a thread hop per request on the hot path.
async def get_context(request: Request) -> AppContext:
    return request.app.state.context


Context = Annotated[AppContext, Depends(get_context)]


async def get_pipeline(request: Request) -> CallPipeline:
    return request.app.state.context.pipeline


async def get_gateway(request: Request) -> GatewayService:
    return request.app.state.context.gateway


async def get_catalog(request: Request) -> ModelCatalog:
    return request.app.state.context.catalog


async def get_settings(request: Request) -> AppSettings:
    return request.app.state.context.settings


async def get_searcher(request: Request) -> Searcher:
    return request.app.state.context.searcher


Pipeline = Annotated[CallPipeline, Depends(get_pipeline)]
Gateway = Annotated[GatewayService, Depends(get_gateway)]
Catalog = Annotated[ModelCatalog, Depends(get_catalog)]
Settings = Annotated[AppSettings, Depends(get_settings)]
RagSearcher = Annotated[Searcher, Depends(get_searcher)]


async def get_session(context: Context) -> AsyncIterator[AsyncSession]:
    async with context.session_factory() as session:
        yield session


Session = Annotated[AsyncSession, Depends(get_session)]


async def get_principal(request: Request) -> Principal:
    # Reads the header and the context itself: every sub-dependency costs FastAPI work on
    # each request, and this one runs on all of them.
    context: AppContext = request.app.state.context
    return await context.authenticator.authenticate(request.headers.get("authorization"))


Caller = Annotated[Principal, Depends(get_principal)]


async def require_admin(caller: Caller) -> Principal:
    caller.require(Permission.admin)
    return caller


Admin = Annotated[Principal, Depends(require_admin)]


async def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


ClientAddress = Annotated[str | None, Depends(client_address)]


def page_params(enum_name: str, order_by: Iterable[str]) -> Callable[..., PageRequest]:
    """A dependency reading offset, limit, order_by (one of `order_by`) and order_direction."""
    OrderBy = StrEnum(enum_name, {name: name for name in order_by})  # type: ignore[misc]

    async def dependency(
        offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
        limit: Annotated[int, Query(ge=1, le=100)] = 10,
        order_by: Annotated[OrderBy, Query()] = OrderBy("id"),  # type: ignore[valid-type]
        order_direction: Annotated[OrderDirection, Query()] = OrderDirection.asc,
    ) -> PageRequest:
        return PageRequest(offset=offset, limit=limit, order_by=order_by.value, order_direction=order_direction)

    return dependency
