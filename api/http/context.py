"""What the API's requests may need, built once per app by the lifespan and torn down with it:
the process's runtime (`api.runtime`) and what only the API serves (logins, provider health)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.calls.gateway import Gateway
from api.calls.pipeline import Pipeline, Step
from api.catalog.catalog import ModelCatalog
from api.catalog.crypto import SecretBox
from api.catalog.provider_health import HealthMonitor
from api.conversations.keeper import ConversationKeeper
from api.policies.book import PolicyBook
from api.identity.authenticator import Authenticator
from api.identity.login import LoginThrottle
from api.identity.secrets import PasswordHasher
from api.observability.components import Components, DatabaseProbe
from api.observability.metrics import GatewayMetrics
from api.providers.sessions import UpstreamSessions
from api.quota.balances import BudgetStore
from api.quota.quotas import Quotas
from api.rag.embedder import Embedder
from api.rag.ingestion import Ingestion
from api.rag.ocr import Ocr
from api.rag.search import Searcher
from api.rag.vectors import VectorStore
from api.runtime import every, open_call_path, open_rag, open_stores
from api.settings import Settings
from api.state import CounterStore
from api.state.load import LoadTracker
from api.usage.writer import UsageWriter


@dataclass(frozen=True)
class AppContext:
    settings: Settings
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    redis: Redis | None
    counters: CounterStore
    load: LoadTracker
    budgets: BudgetStore
    authenticator: Authenticator
    hasher: PasswordHasher
    login_throttle: LoginThrottle
    secrets: SecretBox
    upstreams: UpstreamSessions
    catalog: ModelCatalog
    gateway: Gateway
    quotas: Quotas
    usage_writer: UsageWriter
    metrics: GatewayMetrics
    pipeline: Pipeline  # every model call
    local_calls: Pipeline  # requests served without a model, recorded all the same
    policies: PolicyBook
    conversations: ConversationKeeper
    health: HealthMonitor
    components: Components  # what /metrics probes: the database, Redis, the usage writer
    vectors: VectorStore
    embedder: Embedder
    ingestion: Ingestion
    ocr: Ocr
    searcher: Searcher


async def build_context(settings: Settings, stack: AsyncExitStack, extra_steps: Sequence[Step] = ()) -> AppContext:
    """Open everything on `stack`, which closes it. `extra_steps` join the call pipeline."""
    stores = await open_stores(settings, stack)
    calls = await open_call_path(settings, stores, stack, extra_steps)
    gateway_settings = settings.settings.gateway
    health = HealthMonitor(
        calls.catalog, calls.upstreams, stores.load, gateway_settings.health_check_seconds,
        gateway_settings.health_check_timeout_seconds, gateway_settings.cooldown_seconds, calls.gateway.traffic,
    )
    if gateway_settings.health_check_seconds > 0:
        every(stack, "provider-health", health.check_round, health.interval, first_after=0)
    rag = open_rag(settings, stores, calls, stack, ingest=True)
    return AppContext(
        settings=settings, engine=stores.engine, session_factory=stores.session_factory, redis=stores.redis,
        counters=stores.counters, load=stores.load, budgets=stores.budgets,
        authenticator=calls.authenticator, hasher=PasswordHasher(),
        login_throttle=LoginThrottle(stores.counters, settings.settings.login),
        secrets=calls.secrets, upstreams=calls.upstreams, catalog=calls.catalog, gateway=calls.gateway,
        quotas=calls.quotas, usage_writer=calls.usage_writer, metrics=calls.metrics, pipeline=calls.pipeline,
        local_calls=calls.local_calls, policies=calls.policies, conversations=calls.conversations, health=health,
        components=Components(stores.engine, DatabaseProbe(stores.session_factory), stores.redis, calls.usage_writer),
        vectors=rag.vectors, embedder=rag.embedder, ingestion=rag.ingestion, ocr=rag.ocr, searcher=rag.searcher,
    )
