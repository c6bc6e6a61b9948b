"""FastAPI dependencies: hand the app's context, a DB session and the caller to the routes."""

from collections.abc import AsyncIterator, Callable, Iterable
from enum import StrEnum
from typing import Annotated

from fastapi import Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from api.common.listing import PageRequest
from api.common.schemas import OrderDirection
from api.calls.gateway import Gateway
from api.calls.pipeline import Pipeline
from api.conversations.keeper import ConversationKeeper
from api.policies.book import PolicyBook
from api.catalog.catalog import ModelCatalog
from api.catalog.crypto import SecretBox
from api.catalog.provider_health import HealthMonitor
from api.identity.authenticator import Authenticator
from api.identity.login import LoginThrottle
from api.identity.secrets import PasswordHasher
from api.observability.components import Components
from api.observability.metrics import GatewayMetrics
from api.providers.sessions import UpstreamSessions
from api.quota.balances import BudgetStore
from api.quota.quotas import Quotas
from api.rag.embedder import Embedder
from api.rag.ingestion import Ingestion
from api.rag.ocr import Ocr
from api.rag.search import Searcher
from api.rag.vectors import VectorStore
from api.settings import Settings
from api.state.load import LoadTracker
from api.usage.writer import UsageWriter
from api.http.context import AppContext
from api.http.params import one_of
from api.identity.principal import Principal
from api.identity.schemas import Permission


# Dependencies are `async def` even when they await nothing: FastAPI runs plain `def`
# dependencies in a thread pool, a thread hop per request on the hot path.
async def get_context(request: Request) -> AppContext:
    return request.app.state.context


Context = Annotated[AppContext, Depends(get_context)]


# What the routes use, one dependency each: a route names what it needs, not the whole context.
async def get_pipeline(request: Request) -> Pipeline:
    return request.app.state.context.pipeline


async def get_local_calls(request: Request) -> Pipeline:
    return request.app.state.context.local_calls


async def get_gateway(request: Request) -> Gateway:
    return request.app.state.context.gateway


async def get_catalog(request: Request) -> ModelCatalog:
    return request.app.state.context.catalog


async def get_settings(request: Request) -> Settings:
    return request.app.state.context.settings


async def get_searcher(request: Request) -> Searcher:
    return request.app.state.context.searcher


async def get_authenticator(request: Request) -> Authenticator:
    return request.app.state.context.authenticator


async def get_vectors(request: Request) -> VectorStore:
    return request.app.state.context.vectors


async def get_secrets(request: Request) -> SecretBox:
    return request.app.state.context.secrets


async def get_hasher(request: Request) -> PasswordHasher:
    return request.app.state.context.hasher


async def get_ocr(request: Request) -> Ocr:
    return request.app.state.context.ocr


async def get_login_throttle(request: Request) -> LoginThrottle:
    return request.app.state.context.login_throttle


async def get_embedder(request: Request) -> Embedder:
    return request.app.state.context.embedder


async def get_usage_writer(request: Request) -> UsageWriter:
    return request.app.state.context.usage_writer


async def get_budgets(request: Request) -> BudgetStore:
    return request.app.state.context.budgets


async def get_quotas(request: Request) -> Quotas:
    return request.app.state.context.quotas


async def get_ingestion(request: Request) -> Ingestion:
    return request.app.state.context.ingestion


async def get_health(request: Request) -> HealthMonitor:
    return request.app.state.context.health


async def get_load(request: Request) -> LoadTracker:
    return request.app.state.context.load


async def get_metrics(request: Request) -> GatewayMetrics:
    return request.app.state.context.metrics


async def get_components(request: Request) -> Components:
    return request.app.state.context.components


async def get_upstreams(request: Request) -> UpstreamSessions:
    return request.app.state.context.upstreams


PipelineDep = Annotated[Pipeline, Depends(get_pipeline)]
LocalCallsDep = Annotated[Pipeline, Depends(get_local_calls)]
GatewayDep = Annotated[Gateway, Depends(get_gateway)]
CatalogDep = Annotated[ModelCatalog, Depends(get_catalog)]


async def get_policies(request: Request) -> PolicyBook:
    return request.app.state.context.policies


PoliciesDep = Annotated[PolicyBook, Depends(get_policies)]


async def get_conversations(request: Request) -> ConversationKeeper:
    return request.app.state.context.conversations


ConversationsDep = Annotated[ConversationKeeper, Depends(get_conversations)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
SearcherDep = Annotated[Searcher, Depends(get_searcher)]
AuthenticatorDep = Annotated[Authenticator, Depends(get_authenticator)]
VectorsDep = Annotated[VectorStore, Depends(get_vectors)]
SecretsDep = Annotated[SecretBox, Depends(get_secrets)]
HasherDep = Annotated[PasswordHasher, Depends(get_hasher)]
OcrDep = Annotated[Ocr, Depends(get_ocr)]
LoginThrottleDep = Annotated[LoginThrottle, Depends(get_login_throttle)]
EmbedderDep = Annotated[Embedder, Depends(get_embedder)]
UsageWriterDep = Annotated[UsageWriter, Depends(get_usage_writer)]
BudgetsDep = Annotated[BudgetStore, Depends(get_budgets)]
QuotasDep = Annotated[Quotas, Depends(get_quotas)]
IngestionDep = Annotated[Ingestion, Depends(get_ingestion)]
HealthDep = Annotated[HealthMonitor, Depends(get_health)]
LoadDep = Annotated[LoadTracker, Depends(get_load)]
MetricsDep = Annotated[GatewayMetrics, Depends(get_metrics)]
ComponentsDep = Annotated[Components, Depends(get_components)]
UpstreamsDep = Annotated[UpstreamSessions, Depends(get_upstreams)]


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


def page_params(enum_name: str, order_by: Iterable[str], sort_names: bool = False) -> Callable[..., PageRequest]:
    """A dependency reading offset, limit, order_by (one of `order_by`) and order_direction.
    With `sort_names`, also OpenGateLLM's newer names of the last two, sort_by and sort_order
    (its router list uses them): either name works, two different values are a 422."""
    OrderBy = StrEnum(enum_name, {name: name for name in order_by})  # type: ignore[misc]
    Offset = Annotated[int, Query(ge=0, le=2**31 - 1)]
    Limit = Annotated[int, Query(ge=1, le=100)]

    async def dependency(
        offset: Offset = 0,
        limit: Limit = 10,
        order_by: Annotated[OrderBy, Query()] = OrderBy("id"),  # type: ignore[valid-type]
        order_direction: Annotated[OrderDirection, Query()] = OrderDirection.asc,
    ) -> PageRequest:
        return _page(offset, limit, order_by, order_direction)

    async def with_sort_names(
        offset: Offset = 0,
        limit: Limit = 10,
        order_by: Annotated[OrderBy | None, Query(description="The field to order by (default: id).")] = None,  # type: ignore[valid-type]
        order_direction: Annotated[OrderDirection | None, Query(description="asc (default) or desc.")] = None,
        sort_by: Annotated[OrderBy | None, Query(description="order_by, as OpenGateLLM names it.")] = None,  # type: ignore[valid-type]
        sort_order: Annotated[OrderDirection | None, Query(description="order_direction, as OpenGateLLM names it.")] = None,
    ) -> PageRequest:
        return _page(offset, limit, one_of(("order_by", order_by), ("sort_by", sort_by)),
                     one_of(("order_direction", order_direction), ("sort_order", sort_order)))

    return with_sort_names if sort_names else dependency


def _page(offset: int, limit: int, order_by: StrEnum | None, direction: OrderDirection | None) -> PageRequest:
    return PageRequest(offset=offset, limit=limit, order_by=order_by.value if order_by is not None else "id",
                       order_direction=direction or OrderDirection.asc)
