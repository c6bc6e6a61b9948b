"""Redis and PostgreSQL going away under traffic, against the real servers.

A `TcpRelay` sits between the app and the real Redis / PostgreSQL (the ones the other tests
use, left undisturbed); cutting it drops every connection and refuses new ones, which is what
a server restart looks like to a client. What is proved (docs/security.md, "Dependency
faults"): while Redis is away model calls get a prompt 503 with Retry-After, each recorded
once; while PostgreSQL is away calls with a key already seen go on, and every usage record
is written once it is back; the app never answers 500 and recovers by itself.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url

from api.db.tables import User
from api.providers import Endpoint
from api.settings import Settings
from api.usage.records import UsageRecord
from conftest import ADMIN, MASTER_KEY, Backend, Models, Seeder, _empty_tables, running_app, usage_rows
from fakes.tcp_relay import TcpRelay
from fakes.upstream import FakeUpstream

BODY = {"model": "chat", "messages": [{"role": "user", "content": "one two three"}], "max_tokens": 5}
STREAM_BODY = {**BODY, "stream": True}
REQUEST_ID = "x-tollgate-request-id"
# As in test_budgets: a call reserves 24 micro-units and really costs 8.
RESERVED, SPENT = 24_000, 8_000  # nanos
BUDGET_NANOS = 1_000_000_000
PROMPT = 1.0  # a refusal while a dependency refuses connections takes less than this (seconds)
REDIS_TIMEOUT = 1.0  # redis.timeout_seconds of the test apps


@dataclass
class Relayed:
    client: httpx.AsyncClient
    redis: TcpRelay
    database: TcpRelay


def _through(relay: TcpRelay, url: str) -> str:
    parts = urlsplit(url)
    credentials = parts.netloc.rpartition("@")[0]
    netloc = (credentials + "@" if credentials else "") + f"127.0.0.1:{relay.port}"
    return parts._replace(netloc=netloc).geturl()


@asynccontextmanager
async def relays(backend: Backend) -> AsyncIterator[tuple[TcpRelay, TcpRelay]]:
    """Relays (Redis, PostgreSQL) to the real servers."""
    if backend.redis_url is None:
        pytest.skip("dependency faults are tested against real PostgreSQL and Redis servers (postgres-redis backend)")
    database_url = make_url(backend.database_url)
    redis_url = urlsplit(backend.redis_url)
    database = TcpRelay(database_url.host or "127.0.0.1", database_url.port or 5432)
    redis = TcpRelay(redis_url.hostname or "127.0.0.1", redis_url.port or 6379)
    await database.start()
    await redis.start()
    try:
        yield redis, database
    finally:
        await redis.stop()
        await database.stop()


def relayed_settings(backend: Backend, redis: TcpRelay, database: TcpRelay, tmp_path: Path, **general: object) -> Settings:
    """Settings of an app whose Redis and PostgreSQL connections go through the relays; its
    usage journal (and Qdrant) in the test's folder, never the repository's ./data."""
    assert backend.redis_url is not None
    database_url = make_url(backend.database_url)
    return Settings(
        settings={"auth_master_key": MASTER_KEY, "access_log": False, "usage_journal_path": str(tmp_path / "usage-journal"),
                  **general},
        dependencies={
            "database": {"url": database_url.set(host="127.0.0.1", port=database.port).render_as_string(hide_password=False)},
            # A short timeout, so that a stalled (not refused) connection is found out quickly too.
            "redis": {"url": _through(redis, backend.redis_url), "key_prefix": f"tollgate-test:{uuid.uuid4().hex}:",
                      "timeout_seconds": REDIS_TIMEOUT},
            "qdrant": {"path": str(tmp_path / "qdrant")},
        },
    )


@asynccontextmanager
async def relayed_app(backend: Backend, tmp_path: Path, **general: object) -> AsyncIterator[Relayed]:
    """An app whose Redis and PostgreSQL connections all go through relays to the real ones."""
    async with relays(backend) as (redis, database):
        await _empty_tables(backend.database_url)
        async with running_app(relayed_settings(backend, redis, database, tmp_path, **general)) as client:
            try:
                yield Relayed(client, redis, database)
            finally:  # a failed test too: the app drains its usage queue at shutdown
                await redis.restore()
                await database.restore()


async def provision(client: httpx.AsyncClient, upstream: FakeUpstream):  # type: ignore[no-untyped-def]
    """A priced router whose provider has an in-flight cap, and a user with limits and a
    budget: every call takes a rate-limit window, a budget hold and an in-flight lease."""
    models = Models(client, Seeder(client))
    router = await models.router(cost_prompt_tokens=1, cost_completion_tokens=1)
    await models.provider(router, upstream.base_url, qos_metric="inflight", qos_limit=100)
    return await models.user_for(router, limits={"rpm": 100_000, "tpm": 10_000_000}, budget=BUDGET_NANOS / 1e9)


@dataclass
class Call:
    started: float
    ended: float
    status: int
    headers: httpx.Headers
    body: bytes


class Traffic:
    """A few clients calling in a loop, each call remembered with when it started and ended
    (a call that hangs is remembered as status 0)."""

    def __init__(self, client: httpx.AsyncClient, headers: dict[str, str], workers: int = 3) -> None:
        self.client = client
        self.headers = headers
        self.calls: list[Call] = []
        self._running = True
        self._tasks = [asyncio.create_task(self._loop(i)) for i in range(workers)]

    async def _loop(self, worker: int) -> None:
        while self._running:
            body = STREAM_BODY if worker == 0 and len(self.calls) % 2 else BODY
            started = time.monotonic()
            try:
                response = await asyncio.wait_for(
                    self.client.post("/v1/chat/completions", json=body, headers=self.headers), timeout=10
                )
            except TimeoutError:
                self.calls.append(Call(started, time.monotonic(), 0, httpx.Headers(), b""))
                continue
            self.calls.append(Call(started, time.monotonic(), response.status_code, response.headers, response.content))
            await asyncio.sleep(0.02)

    async def stop(self) -> list[Call]:
        self._running = False
        await asyncio.gather(*self._tasks)
        return self.calls


@asynccontextmanager
async def traffic(client: httpx.AsyncClient, headers: dict[str, str]) -> AsyncIterator[Traffic]:
    running = Traffic(client, headers)
    try:
        yield running
    finally:  # stopped before the app, even when the test failed
        await running.stop()


def between(calls: list[Call], start: float, end: float) -> list[Call]:
    return [c for c in calls if c.started >= start and c.ended <= end]


HELD = [{"role": "user", "content": "one two held"}]  # as many tokens as BODY's, told apart by the provider


async def admitted_then_held(client: httpx.AsyncClient, upstream: FakeUpstream, headers: dict[str, str]) -> list[asyncio.Task[httpx.Response]]:
    """Two calls (one streamed) admitted now, whose provider answers a second later."""
    upstream.behaviour.delay_seconds = 1.0
    seen = len(upstream.received)
    calls = [asyncio.create_task(client.post("/v1/chat/completions", json={**body, "messages": HELD}, headers=headers))
             for body in (BODY, STREAM_BODY)]
    # Both reached the provider: admitted, their leases taken.
    while sum(r.body.get("messages") == HELD for r in upstream.received[seen:]) < 2:
        await asyncio.sleep(0.01)
    upstream.behaviour.delay_seconds = 0.0
    return calls


async def chat_rows(client: httpx.AsyncClient) -> list:
    context = client.app.state.context  # type: ignore[attr-defined]
    await asyncio.wait_for(context.usage_writer.flush(), timeout=20)
    return [r for r in await usage_rows(client) if r.endpoint == Endpoint.chat.value]


async def test_redis_outage_refuses_calls_with_503_and_recovers(backend, upstream, tmp_path) -> None:
    async with relayed_app(backend, tmp_path) as relayed:
        client = relayed.client
        user = await provision(client, upstream)
        for _ in range(3):
            assert (await client.post("/v1/chat/completions", json=BODY, headers=user.headers)).status_code == 200

        async with traffic(client, user.headers) as load:
            await asyncio.sleep(0.5)
            held = await admitted_then_held(client, upstream, user.headers)
            await relayed.redis.cut()
            cut = time.monotonic()

            # What else needs Redis is refused the same way: the login throttle, the live balance.
            login = await client.post("/v1/auth/login", json={"email": user.email, "password": "wrong password!"})
            assert login.status_code == 503 and "Retry-After" in login.headers, login.text
            info = await client.get("/v1/me/info", headers=user.headers)
            assert info.status_code == 503 and "Retry-After" in info.headers, info.text
            # Admitted before the cut, settled during it: answered, the lost settlement only logged.
            assert [(await call).status_code for call in held] == [200, 200]

            await asyncio.sleep(10 - (time.monotonic() - cut))
            await relayed.redis.restore()
            restored = time.monotonic()
            await asyncio.sleep(2.5)
            calls = await load.stop()

        statuses = Counter(c.status for c in calls)
        assert set(statuses) <= {200, 503} and statuses[200] and statuses[503], statuses
        during = between(calls, cut, restored)
        assert len(during) > 20 and all(c.status == 503 for c in during)
        assert all(c.ended - c.started < PROMPT for c in during), max(c.ended - c.started for c in during)
        assert all(c.headers["retry-after"] == "2" and b"Redis" in c.body and c.body.startswith(b'{"detail"') for c in during)
        # Back by itself within a couple of seconds: every call started after that succeeds.
        assert all(c.status == 200 for c in calls if c.started > restored + 2), statuses
        assert any(c.status == 200 for c in calls if restored < c.started < restored + 2)

        # Every call recorded exactly once, with the status its client got.
        rows = await chat_rows(client)
        client_saw = statuses + Counter({200: 3 + 2})
        assert Counter(r.status for r in rows) == client_saw
        assert len({r.request_id for r in rows}) == len(rows)
        # The database budget is charged the real cost of each answered call, nothing else.
        async with client.app.state.context.session_factory() as session:  # type: ignore[attr-defined]
            db_budget = (await session.execute(select(User.budget_nanos).where(User.id == user.id))).scalar_one()
        assert db_budget == BUDGET_NANOS - SPENT * client_saw[200]
        # The live balance kept the dropped settlements' holds: it errs on the safe side.
        live = (await client.get("/v1/me/info", headers=user.headers)).json()["budget"]
        assert round(live * 1e9) <= db_budget - 2 * (RESERVED - SPENT)


async def test_a_budget_change_answered_503_during_a_redis_outage_changed_nothing(backend, upstream, tmp_path) -> None:
    """A client retries what was answered 503: so a 503 must mean nothing was committed, and a
    retry with the same Idempotency-Key, once Redis is back, applies the change exactly once."""
    async with relayed_app(backend, tmp_path) as relayed:
        client = relayed.client
        user = await provision(client, upstream)
        assert (await client.post("/v1/chat/completions", json=BODY, headers=user.headers)).status_code == 200
        path = f"/v1/admin/users/{user.id}/budget"
        recharge = {"json": {"amount": 0.5}, "headers": {**ADMIN, "Idempotency-Key": "recharge-1"}}
        live_before = (await client.get("/v1/me/info", headers=user.headers)).json()["budget"]  # the call settled
        await relayed.redis.cut()
        refused = await client.post(path, **recharge)
        assert refused.status_code == 503 and "nothing was committed" in refused.json()["detail"]
        patched = await client.patch(f"/v1/admin/users/{user.id}", json={"budget": 5, "name": "renamed"}, headers=ADMIN)
        assert patched.status_code == 503
        await relayed.redis.restore()
        await client.app.state.context.usage_writer.flush()  # type: ignore[attr-defined]
        spent = BUDGET_NANOS - SPENT
        async with client.app.state.context.session_factory() as session:  # type: ignore[attr-defined]
            row = (await session.execute(select(User.budget_nanos, User.name).where(User.id == user.id))).one()
        assert row.budget_nanos == spent and row.name != "renamed"
        assert (await client.get(path, headers=ADMIN)).json()["total"] == 0

        for _ in range(2):  # the retry, and the retry of the retry
            assert (await client.post(path, **recharge)).status_code == 201
        assert (await client.get(path, headers=ADMIN)).json()["total"] == 1
        live = (await client.get("/v1/me/info", headers=user.headers)).json()["budget"]
        assert round(live * 1e9) == round(live_before * 1e9) + 500_000_000


async def test_a_hung_redis_costs_one_bounded_wait_then_503(backend, upstream, tmp_path) -> None:
    """Redis (or the network to it) stops answering but closes nothing: every wait is bounded
    by redis.timeout_seconds, so calls still get their 503, only later."""
    async with relayed_app(backend, tmp_path) as relayed:
        client = relayed.client
        user = await provision(client, upstream)
        assert (await client.post("/v1/chat/completions", json=BODY, headers=user.headers)).status_code == 200

        async with traffic(client, user.headers) as load:
            await asyncio.sleep(0.3)
            await relayed.redis.stall()
            stalled = time.monotonic()
            await asyncio.sleep(4)
            await relayed.redis.restore()
            restored = time.monotonic()
            await asyncio.sleep(2.5)
            calls = await load.stop()

        statuses = Counter(c.status for c in calls)
        assert set(statuses) <= {200, 503}, statuses
        during = between(calls, stalled, restored)
        # How many fit in the stall depends on the machine's load (each waits out a timeout).
        assert len(during) >= 1 and all(c.status == 503 and c.headers["retry-after"] == "2" for c in during)
        # One Redis timeout, plus at most one wait for a pooled connection: never a hang.
        assert all(c.ended - c.started < 2 * REDIS_TIMEOUT + 0.5 for c in calls), max(c.ended - c.started for c in calls)
        assert all(c.status == 200 for c in calls if c.started > restored + 2), statuses
        assert any(c.status == 200 for c in calls if restored < c.started < restored + 2)
        rows = await chat_rows(client)
        assert Counter(r.status for r in rows) == statuses + Counter({200: 1})


async def test_database_restart_keeps_serving_known_keys_and_writes_every_record(backend, upstream, tmp_path) -> None:
    async with relayed_app(backend, tmp_path) as relayed:
        client = relayed.client
        user = await provision(client, upstream)
        # A second key of the same user, never used before the outage: in no cache.
        response = await client.post("/v1/admin/tokens", json={"name": "cold", "user": user.id}, headers=ADMIN)
        cold = {"Authorization": f"Bearer {response.json()['token']}"}
        assert (await client.post("/v1/chat/completions", json=BODY, headers=user.headers)).status_code == 200

        async with traffic(client, user.headers) as load:
            await asyncio.sleep(0.5)
            await relayed.database.cut()
            cut = time.monotonic()
            await asyncio.sleep(1.5)  # past the key cache's 1 s: the known key now outlives its entry
            refused = [
                await client.post("/v1/chat/completions", json=BODY, headers=cold),
                await client.get("/v1/admin/users", headers=ADMIN),
                await client.get("/v1/me/info", headers=user.headers),
            ]
            for response in refused:
                assert response.status_code == 503 and "Retry-After" in response.headers, response.text
                assert "unavailable" in response.json()["detail"]
            await asyncio.sleep(3 - (time.monotonic() - cut))
            waiting = client.app.state.context.usage_writer.pending  # type: ignore[attr-defined]
            await relayed.database.restore()
            restored = time.monotonic()

            # The pool recovers by itself: a key never seen is checked again within a couple of seconds.
            while (response := await client.post("/v1/chat/completions", json=BODY, headers=cold)).status_code != 200:
                assert response.status_code == 503 and time.monotonic() - restored < 2, response.text
                await asyncio.sleep(0.1)
            calls = await load.stop()

        assert all(c.status == 200 for c in calls), Counter(c.status for c in calls)
        assert len(between(calls, cut, restored)) > 20 and waiting > 20
        # Every answered call has exactly one usage record, written once the database was back.
        answered = [c.headers[REQUEST_ID] for c in calls] + [response.headers[REQUEST_ID]]
        rows = await chat_rows(client)
        recorded = Counter(r.request_id for r in rows)
        assert all(recorded[request_id] == 1 for request_id in answered)
        assert len(rows) == len(answered) + 1 and sum(recorded.values()) == len(recorded)  # + the warm-up call
        assert all(r.status == 200 for r in rows)


async def test_a_batch_sent_again_after_its_commit_was_lost_is_written_once(client, models: Models, upstream) -> None:
    """What the usage writer does when a connection breaks during COMMIT: it cannot know
    whether the batch is in, so it sends it again; the unique request id keeps each record,
    and its cost on the user's budget, once. (Both backends: no outage needed to prove it.)"""
    router = await models.router(cost_prompt_tokens=1, cost_completion_tokens=1)
    user = await models.user_for(router, budget=1)
    records = [
        UsageRecord(request_id=uuid.uuid4().hex, endpoint=Endpoint.chat.value, method="POST", status=200,
                    user_id=user.id, organization_id=None, key_id=user.key_id, key_name="test", cost_nanos=1_000)
        for _ in range(5)
    ]
    writer = client.app.state.context.usage_writer
    await writer.write_now(records[:3])  # committed, but say the answer to COMMIT was lost
    await writer.write_now(records)  # so the whole batch is sent again, with two more
    recorded = Counter(r.request_id for r in await usage_rows(client))
    assert recorded == Counter(r.request_id for r in records)
    async with client.app.state.context.session_factory() as session:
        budget = (await session.execute(select(User.budget_nanos).where(User.id == user.id))).scalar_one()
    assert budget == 1_000_000_000 - 5 * 1_000


DRAIN = 1.0  # usage_drain_seconds of the shutdown test


async def test_a_shutdown_while_the_database_is_down_leaves_the_records_in_the_journal(backend, upstream, tmp_path) -> None:
    """PostgreSQL is down when the app stops: the usage writer tries for usage_drain_seconds,
    then the app stops all the same, its records kept in the usage journal. The next app on
    the same folder writes them, each once, once the database is back."""
    async with relays(backend) as (redis, database):
        settings = relayed_settings(backend, redis, database, tmp_path, usage_drain_seconds=DRAIN)
        stack = AsyncExitStack()
        try:
            await _empty_tables(backend.database_url)
            client = await stack.enter_async_context(running_app(settings))
            user = await provision(client, upstream)
            assert (await client.post("/v1/chat/completions", json=BODY, headers=user.headers)).status_code == 200
            assert len(await chat_rows(client)) == 1
            await database.cut()
            answered = []
            for _ in range(5):
                response = await client.post("/v1/chat/completions", json=BODY, headers=user.headers)
                assert response.status_code == 200, response.text
                answered.append(response.headers[REQUEST_ID])
            assert client.app.state.context.usage_writer.pending == 5  # type: ignore[attr-defined]
            stopping = time.monotonic()
            await asyncio.wait_for(stack.aclose(), timeout=DRAIN + 10)  # was: waited for the database forever
            stopped = time.monotonic() - stopping
        finally:
            await database.restore()
            await stack.aclose()
        assert stopped < DRAIN + 3, stopped
        assert list((tmp_path / "usage-journal").glob("*.usage.jsonl"))  # left for the next process

        async with running_app(settings) as second:  # replays the folder's orphaned records at start
            rows = await chat_rows(second)
            async with second.app.state.context.session_factory() as session:  # type: ignore[attr-defined]
                budget = (await session.execute(select(User.budget_nanos).where(User.id == user.id))).scalar_one()
        recorded = Counter(r.request_id for r in rows)
        assert len(rows) == 6 and all(recorded[request_id] == 1 for request_id in answered)
        assert budget == BUDGET_NANOS - 6 * SPENT
        assert not list((tmp_path / "usage-journal").glob("*.usage.jsonl"))


async def test_chat_with_search_while_the_database_is_down_is_a_503_recorded_as_such(backend, upstream, tmp_path) -> None:
    """The search of a chat reads the database (the collections the caller may read): down,
    the call gets 503 with Retry-After, and its usage record says 503 too (was 500)."""
    async with relayed_app(backend, tmp_path, rag={"vector_store_model": "embeddings"}) as relayed:
        client = relayed.client
        models = Models(client, Seeder(client))
        chat = await models.router()
        await models.provider(chat, upstream.base_url)
        embeddings = await models.router("embeddings", type="text-embeddings-inference")
        await models.provider(embeddings, upstream.base_url, model_name="fake-embed")
        user = await models.user_for(chat, embeddings)
        body = {**BODY, "search": True, "search_args": {"method": "semantic"}}
        assert (await client.post("/v1/chat/completions", json=body, headers=user.headers)).status_code == 200
        await relayed.database.cut()
        response = await client.post("/v1/chat/completions", json=body, headers=user.headers)
        await relayed.database.restore()
        assert response.status_code == 503 and "Retry-After" in response.headers, response.text
        assert "unavailable" in response.json()["detail"]
        rows = {r.request_id: r for r in await chat_rows(client)}
        assert rows[response.headers["x-request-id"]].status == 503  # an error has the usage record's id there
