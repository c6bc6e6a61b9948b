"""What a process builds once and hands out: its stores, the call path, RAG.

Each part is opened on an exit stack, which closes it (and stops its background tasks) in the
reverse order. The API process opens all three and adds what only it serves (logins, provider
health checks: `api.http.context`); a worker opens the parts that ingestion and journal replay
need (`workers.ingestion`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from api.calls.gateway import Gateway
from api.calls.pipeline import Pipeline, Step
from api.calls.steps import Forward, Record, build_steps
from api.catalog.catalog import ModelCatalog
from api.catalog.crypto import SecretBox
from api.catalog.seed import seed_models
from api.db.engine import build_engine, build_session_factory
from api.identity.authenticator import Authenticator
from api.observability.metrics import GatewayMetrics
from api.providers.sessions import UpstreamSessions
from api.quota import ledger
from api.quota.balances import BudgetStore, MemoryBudgetStore, RedisBudgetStore
from api.quota.budget_holds import Budgeter
from api.quota.quotas import Quotas
from api.quota.rate_limits import Limiter
from api.quota.store import MemoryQuotaStore, QuotaStore, RedisQuotaStore
from api.quota.windows import LimitStore, MemoryLimitStore, RedisLimitStore
from api.rag.collections import collection_owners
from api.rag.embedder import Embedder
from api.rag.ingestion import Ingestion
from api.rag.ocr import Ocr
from api.rag.search import Searcher
from api.rag.vectors import VectorStore
from api.settings import Settings
from api.state import CounterStore, MemoryCounterStore, RedisCounterStore
from api.state.load import LoadTracker, MemoryLoadTracker, RedisLoadTracker
from api.conversations.keeper import ConversationKeeper
from api.conversations.step import KeepConversations
from api.policies.book import PolicyBook
from api.policies.step import ApplyPolicies
from api.state.ttft import MemoryTtftTracker, RedisTtftTracker, TtftTracker
from api.state.redis_client import build_redis
from api.state.response_cache import MemoryResponseCache, RedisResponseCache, ResponseCache
from api.usage.journal import UsageJournal, replay_orphans
from api.usage.retention import purge_usage
from api.usage.writer import UsageWriter

# How often each process deletes the usage records older than `usage_retention_days`.
PURGE_EVERY_SECONDS = 3600.0
# Not in a process's first minute: it has enough to write then (and SQLite one writer), and
# records a minute older are no harm. Conversation records are purged the same way.
FIRST_PURGE_AFTER_SECONDS = 60.0
# How long a background loop asked to stop may take to finish the round it is in.
STOP_GRACE_SECONDS = 10.0


logger = logging.getLogger("tollgate")

@dataclass(frozen=True)
class Stores:
    """The database and the shared state: Redis, or this process's memory."""

    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    redis: Redis | None
    counters: CounterStore
    load: LoadTracker
    quota_store: QuotaStore
    limits: LimitStore
    budgets: BudgetStore
    ttft: TtftTracker


async def open_stores(settings: Settings, stack: AsyncExitStack) -> Stores:
    engine = build_engine(settings.dependencies.database)
    stack.push_async_callback(engine.dispose)
    session_factory = build_session_factory(engine)
    redis_settings = settings.dependencies.redis
    ttft_window = settings.settings.gateway.ttft_window_seconds
    if redis_settings is None:
        memory_limits, memory_budgets = MemoryLimitStore(), MemoryBudgetStore()
        return Stores(engine, session_factory, None, MemoryCounterStore(), MemoryLoadTracker(),
                      MemoryQuotaStore(memory_limits, memory_budgets), memory_limits, memory_budgets,
                      MemoryTtftTracker(ttft_window))
    redis = build_redis(redis_settings)
    stack.push_async_callback(redis.aclose)
    await redis.ping()
    prefix = redis_settings.key_prefix
    quota_store = RedisQuotaStore(redis, prefix)
    stack.push_async_callback(quota_store.close)
    return Stores(
        engine, session_factory, redis, RedisCounterStore(redis, prefix), RedisLoadTracker(redis, prefix), quota_store,
        RedisLimitStore(redis, prefix, settled=quota_store.flush), RedisBudgetStore(redis, prefix, settled=quota_store.flush),
        RedisTtftTracker(redis, prefix, ttft_window),
    )


@dataclass(frozen=True)
class CallPath:
    """Everything a model call goes through, from the caller's key to its usage record."""

    secrets: SecretBox
    upstreams: UpstreamSessions
    catalog: ModelCatalog
    authenticator: Authenticator
    gateway: Gateway
    quotas: Quotas
    usage_writer: UsageWriter
    metrics: GatewayMetrics
    pipeline: Pipeline  # every model call
    local_calls: Pipeline  # requests served without a model, recorded all the same
    policies: PolicyBook
    conversations: ConversationKeeper


async def purge_conversations(keeper: ConversationKeeper) -> None:
    try:
        await keeper.purge()
    except Exception:  # noqa: BLE001 - tried again at the next round
        logger.exception("purging old conversation records failed")


async def open_call_path(
    settings: Settings, stores: Stores, stack: AsyncExitStack, extra_steps: Sequence[Step] = ()
) -> CallPath:
    """`extra_steps` join the call pipeline (see `api.calls.steps.build_steps`)."""
    general = settings.settings
    secrets = SecretBox(general.encryption_key or general.auth_master_key)
    upstreams = UpstreamSessions()
    stack.push_async_callback(upstreams.close)
    await seed_models(stores.session_factory, upstreams, secrets, settings.models)
    catalog = ModelCatalog(stores.session_factory, secrets)
    await catalog.reload()
    every(stack, "catalog-refresh", catalog.refresh, general.models_refresh_seconds)
    journal = UsageJournal(Path(general.usage_journal_path)) if general.usage_journal_path else None
    usage_writer = UsageWriter(stores.engine, interval_seconds=general.usage_write_interval_seconds, journal=journal,
                               drain_seconds=general.usage_drain_seconds)
    if journal is not None:
        # Records answered by a process of this folder that died before writing them.
        await replay_orphans(journal.directory, usage_writer.write_now)
    usage_writer.start()
    if general.usage_retention_days is not None:
        every(stack, "usage-retention", functools.partial(purge_usage, stores.engine, general.usage_retention_days),
              PURGE_EVERY_SECONDS, first_after=FIRST_PURGE_AFTER_SECONDS)
    # Registered after the stores, so it runs before they close: in-flight usage is written first.
    stack.push_async_callback(usage_writer.stop)
    authenticator = Authenticator(stores.session_factory, general.auth_master_key, ttl=general.auth_cache_ttl_seconds)
    if authenticator.check_every is not None:
        every(stack, "identity-changes", authenticator.check_changes, authenticator.check_every, first_after=0)
    metrics = GatewayMetrics()
    gateway = Gateway(catalog, stores.load, upstreams, general.gateway, metrics, stores.ttft)
    quotas = Quotas(stores.quota_store, Limiter(stores.limits, metrics), Budgeter(metrics, general.gateway.default_max_tokens),
                    budget_of=functools.partial(ledger.budget_of, stores.session_factory))
    bounds = general.response_cache
    cache: ResponseCache = (
        MemoryResponseCache(bounds.memory_max_bytes, bounds.max_entry_bytes) if stores.redis is None
        else RedisResponseCache(stores.redis, settings.dependencies.redis.key_prefix, bounds.max_entry_bytes)  # type: ignore[union-attr]
    )
    policies = PolicyBook(stores.session_factory)
    await policies.reload()
    every(stack, "policies-refresh", policies.refresh, general.models_refresh_seconds)
    conversations = ConversationKeeper(stores.session_factory, secrets, general.conversation_retention_days)
    every(stack, "conversations-purge", functools.partial(purge_conversations, conversations), PURGE_EVERY_SECONDS,
          first_after=FIRST_PURGE_AFTER_SECONDS)
    steps = build_steps(catalog, quotas, gateway, usage_writer, metrics.records.observe, cache,
                        extra=(ApplyPolicies(policies), KeepConversations(conversations), *extra_steps))
    return CallPath(
        secrets, upstreams, catalog, authenticator, gateway, quotas, usage_writer, metrics, Pipeline(steps),
        Pipeline([step for step in steps if isinstance(step, (Record, Forward))]), policies, conversations,
    )


def background(stack: AsyncExitStack, work: Coroutine[Any, Any, Any], name: str,
               stop: Callable[[], None] | None = None) -> None:
    """Run `work` as a task until the stack closes. Then `stop()` asks it to end, and it has
    `STOP_GRACE_SECONDS` to finish the round it is in before it is cancelled (at once without
    `stop`). Cancelled in the middle of a database call, an SQLite connection is invalidated,
    and the close SQLAlchemy starts for it can wait forever on the connection's stopped
    thread (SQLAlchemy 2.1, aiosqlite 0.22): a task that never ends holds the process's exit."""
    task = asyncio.create_task(work, name=name)

    async def end() -> None:
        if stop is not None:
            stop()
            await asyncio.wait({task}, timeout=STOP_GRACE_SECONDS)
            if not task.done():
                logger.warning("%s did not stop within %.0fs of being asked: cancelled", name, STOP_GRACE_SECONDS)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    stack.push_async_callback(end)


def every(stack: AsyncExitStack, name: str, round_: Callable[[], Awaitable[None]], seconds: float,
          first_after: float | None = None) -> None:
    """`round_()` every `seconds` (the first after `first_after`, by default `seconds`) until the
    stack closes; a round under way then is finished, not cancelled (`background`). A round
    logs its own failures: one that raises ends the loop."""
    stopping = asyncio.Event()

    async def repeat() -> None:
        delay = seconds if first_after is None else first_after
        while not await _set_within(stopping, delay):
            await round_()
            delay = seconds

    background(stack, repeat(), name, stop=stopping.set)


async def _set_within(event: asyncio.Event, seconds: float) -> bool:
    try:
        async with asyncio.timeout(seconds):
            await event.wait()
    except TimeoutError:
        return False
    return True


@dataclass(frozen=True)
class Rag:
    """Documents, search and OCR: their model calls go through the call path."""

    vectors: VectorStore
    embedder: Embedder
    ingestion: Ingestion
    ocr: Ocr
    searcher: Searcher


def open_rag(settings: Settings, stores: Stores, calls: CallPath, stack: AsyncExitStack, ingest: bool) -> Rag:
    """`ingest`: run the ingestion loop in this process (stopped before the usage writer, so the
    embedding calls it made are still recorded)."""
    rag = settings.settings.rag

    async def owners() -> dict[int, int]:
        async with stores.session_factory() as session:
            return await collection_owners(session)

    vectors = VectorStore(settings.dependencies.qdrant, rag.qdrant_collection, enabled=rag.vector_store_model is not None,
                          lexical_language=rag.lexical_language, owners=owners)
    stack.push_async_callback(vectors.close)
    if rag.vector_store_model is not None:
        # Finished, not cancelled, at stop (a database read: see `background`).
        background(stack, vectors.sweep(), "vector-sweep", stop=lambda: None)
    embedder = Embedder(calls.pipeline, rag.vector_store_model, calls.catalog)
    ingestion = Ingestion(stores.session_factory, vectors, embedder, calls.authenticator, rag)
    if ingest and rag.vector_store_model is not None and rag.ingestion_concurrency > 0:
        background(stack, ingestion.run_forever(rag.ingestion_concurrency), "ingestion", stop=ingestion.stop)
    return Rag(vectors, embedder, ingestion, Ocr(calls.pipeline, settings.settings.gateway.default_max_tokens),
               Searcher(stores.session_factory, vectors, embedder))
