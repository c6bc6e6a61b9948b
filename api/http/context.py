"""Everything a request may need, built once per app by the lifespan and torn down with it."""

from __future__ import annotations

import asyncio
import functools
import logging
from contextlib import AsyncExitStack
from pathlib import Path
from dataclasses import dataclass

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.db.engine import build_engine, build_session_factory
from api.quota import ledger as identity_budgets
from api.identity.auth import Authenticator
from api.calls.gateway import Gateway
from api.quota.budget_holds import Budgeter
from api.quota.rate_limits import Limiter
from api.quota.quotas import Quotas
from api.rag.embedder import Embedder
from api.rag.ingestion import Ingestion
from api.rag.lexical import LexicalAnalyzer
from api.rag.ocr import Ocr
from api.rag.vectors import VectorStore
from api.quota.balances import BudgetStore, MemoryBudgetStore, RedisBudgetStore
from api.observability.metrics import GatewayMetrics
from api.catalog.catalog import ModelCatalog
from api.catalog.provider_health import HealthMonitor
from api.catalog.crypto import SecretBox
from api.catalog.seed import seed_models
from api.providers.sessions import UpstreamSessions
from api.quota.windows import LimitStore, MemoryLimitStore, RedisLimitStore
from api.quota.store import MemoryQuotaStore, QuotaStore, RedisQuotaStore
from api.state.load import LoadTracker, MemoryLoadTracker, RedisLoadTracker
from api.usage.journal import UsageJournal, replay_orphans
from api.usage.writer import UsageWriter
from api.identity.login import LoginThrottle
from api.identity.secrets import PasswordHasher
from api.settings import Settings
from api.state import CounterStore, MemoryCounterStore, RedisCounterStore
from api.state.redis_client import build_redis

logger = logging.getLogger("tollgate")


@dataclass(frozen=True)
class AppContext:
    settings: Settings
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    redis: Redis | None
    counters: CounterStore
    authenticator: Authenticator
    hasher: PasswordHasher
    login_throttle: LoginThrottle
    secrets: SecretBox
    upstreams: UpstreamSessions
    catalog: ModelCatalog
    load: LoadTracker
    gateway: Gateway
    budgets: BudgetStore
    quotas: Quotas
    vectors: VectorStore
    embedder: Embedder
    ingestion: Ingestion
    ocr: Ocr
    usage_writer: UsageWriter
    metrics: GatewayMetrics
    health: HealthMonitor


async def build_context(settings: Settings, stack: AsyncExitStack) -> AppContext:
    """Open the engine and Redis; register their closing on `stack`."""
    engine = build_engine(settings.dependencies.database)
    stack.push_async_callback(engine.dispose)
    session_factory = build_session_factory(engine)

    redis: Redis | None = None
    counters: CounterStore
    load: LoadTracker
    redis_settings = settings.dependencies.redis
    if redis_settings is not None:
        redis = build_redis(redis_settings)
        stack.push_async_callback(redis.aclose)
        await redis.ping()
        counters = RedisCounterStore(redis, redis_settings.key_prefix)
        load = RedisLoadTracker(redis, redis_settings.key_prefix)
        redis_quotas = RedisQuotaStore(redis, redis_settings.key_prefix)
        stack.push_async_callback(redis_quotas.close)
        limits: LimitStore = RedisLimitStore(redis, redis_settings.key_prefix, settled=redis_quotas.flush)
        budgets: BudgetStore = RedisBudgetStore(redis, redis_settings.key_prefix, settled=redis_quotas.flush)
        quota_store: QuotaStore = redis_quotas
    else:
        counters = MemoryCounterStore()
        load = MemoryLoadTracker()
        memory_limits, memory_budgets = MemoryLimitStore(), MemoryBudgetStore()
        limits, budgets = memory_limits, memory_budgets
        quota_store = MemoryQuotaStore(memory_limits, memory_budgets)

    general = settings.settings
    secrets = SecretBox(general.encryption_key or general.auth_master_key)
    upstreams = UpstreamSessions()
    stack.push_async_callback(upstreams.close)
    await seed_models(session_factory, upstreams, secrets, settings.models)
    catalog = ModelCatalog(session_factory, secrets)
    await catalog.reload()
    refresher = asyncio.create_task(catalog.refresh_forever(general.models_refresh_seconds), name="catalog-refresh")
    stack.push_async_callback(_cancel, refresher)
    metrics = GatewayMetrics()
    journal = UsageJournal(Path(general.usage_journal_path)) if general.usage_journal_path else None
    usage_writer = UsageWriter(engine, interval_seconds=general.usage_write_interval_seconds, journal=journal,
                               drain_seconds=general.usage_drain_seconds)
    if journal is not None:
        # Records answered by a process of this folder that died before writing them.
        await replay_orphans(journal.directory, usage_writer.write_now)
    usage_writer.start()
    # Registered last, so it runs first at shutdown: in-flight usage is written before the engine closes.
    stack.push_async_callback(usage_writer.stop)
    authenticator = Authenticator(session_factory, general.auth_master_key, ttl=general.auth_cache_ttl_seconds)
    watching = asyncio.create_task(authenticator.watch_changes(), name="identity-changes")
    stack.push_async_callback(_cancel, watching)
    gateway = Gateway(catalog, load, upstreams, general.gateway, metrics)
    health = HealthMonitor(
        catalog, upstreams, load, general.gateway.health_check_seconds, general.gateway.health_check_timeout_seconds,
        general.gateway.cooldown_seconds,
    )
    if general.gateway.health_check_seconds > 0:
        checking = asyncio.create_task(health.run_forever(), name="provider-health")
        stack.push_async_callback(_cancel, checking)
    quotas = Quotas(quota_store, Limiter(limits, metrics), Budgeter(metrics, general.gateway.default_max_tokens),
                    budget_of=functools.partial(identity_budgets.budget_of, session_factory))
    vectors = VectorStore(
        settings.dependencies.qdrant, general.rag.qdrant_collection, enabled=general.rag.vector_store_model is not None,
        lexical=LexicalAnalyzer(general.rag.lexical_language),
    )
    stack.push_async_callback(vectors.close)
    embedder = Embedder(gateway, quotas, usage_writer, metrics.observe, general.rag.vector_store_model)
    ingestion = Ingestion(session_factory, vectors, embedder, authenticator, general.rag)
    if general.rag.vector_store_model is not None and general.rag.ingestion_concurrency > 0:
        ingesting = asyncio.create_task(ingestion.run_forever(general.rag.ingestion_concurrency), name="ingestion")
        # Stopped before the usage writer: its last embedding calls are still recorded.
        stack.push_async_callback(_cancel, ingesting)
    return AppContext(
        settings=settings,
        engine=engine,
        session_factory=session_factory,
        redis=redis,
        counters=counters,
        authenticator=authenticator,
        hasher=PasswordHasher(),
        login_throttle=LoginThrottle(counters, general.login),
        secrets=secrets,
        upstreams=upstreams,
        catalog=catalog,
        load=load,
        gateway=gateway,
        budgets=budgets,
        quotas=quotas,
        vectors=vectors,
        embedder=embedder,
        ingestion=ingestion,
        ocr=Ocr(gateway, quotas, usage_writer, metrics.observe, general.gateway.default_max_tokens),
        usage_writer=usage_writer,
        metrics=metrics,
        health=health,
    )


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
