"""Test backends: every app-level test runs on SQLite + in-process state, and on PostgreSQL +
Redis when TOLLGATE_TEST_DATABASE_URL and TOLLGATE_TEST_REDIS_URL are set (.ci/run sets them).
Schemas are built by the Alembic migrations, never by create_all."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from api.db.base import Base
from api.db.migrate import upgrade_database
from api.http.app import create_app
from api.settings import Settings
from fakes.anthropic import FakeAnthropic
from fakes.azure import FakeAzure
from fakes.bedrock import FakeBedrock
from fakes.upstream import Behaviour, FakeUpstream

MASTER_KEY = "test-master-key-" + uuid.uuid4().hex
PG_URL = os.environ.get("TOLLGATE_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("TOLLGATE_TEST_REDIS_URL")
# The documents tests' fixtures (`rag`, `embedding_upstream`), for every module that needs them.
pytest_plugins = ["ragkit"]

BACKENDS = ["sqlite-memory"] + (["postgres-redis"] if PG_URL and REDIS_URL else [])


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("CI") == "true" and "postgres-redis" not in BACKENDS:
        raise pytest.UsageError("CI must test PostgreSQL + Redis: set TOLLGATE_TEST_DATABASE_URL and TOLLGATE_TEST_REDIS_URL")


def pytest_report_header(config: pytest.Config) -> list[str]:
    lines = ["tollgate backends: " + ", ".join(BACKENDS)]
    if "postgres-redis" in BACKENDS:
        lines.append(f"  postgres-redis: {_hide_password(PG_URL)} + {REDIS_URL}")
    else:
        lines.append("  postgres-redis: skipped (set TOLLGATE_TEST_DATABASE_URL and TOLLGATE_TEST_REDIS_URL, or run .ci/run)")
    return lines


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """Say how many tests ran on each backend, so a run shows PostgreSQL + Redis were exercised."""
    tally: dict[str, dict[str, int]] = {name: {} for name in BACKENDS}
    for outcome in ("passed", "failed", "error", "skipped"):
        for report in terminalreporter.stats.get(outcome, []):
            for name in BACKENDS:
                if f"[{name}" in report.nodeid or f"-{name}]" in report.nodeid:
                    tally[name][outcome] = tally[name].get(outcome, 0) + 1
    terminalreporter.section("tests per backend")
    for name, outcomes in tally.items():
        counts = ", ".join(f"{n} {outcome}" for outcome, n in outcomes.items()) or "none"
        terminalreporter.write_line(f"{name}: {counts}")


def _hide_password(url: str | None) -> str:
    return make_url(url).render_as_string(hide_password=True) if url else ""


@dataclass(frozen=True)
class Backend:
    name: str
    database_url: str
    redis_url: str | None


async def _create_pg_database(admin_url: str, name: str) -> str:
    url = make_url(admin_url)
    connection = await asyncpg.connect(
        host=url.host, port=url.port or 5432, user=url.username, password=url.password, database=url.database
    )
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return url.set(database=name).render_as_string(hide_password=False)


async def _drop_pg_database(admin_url: str, name: str) -> None:
    url = make_url(admin_url)
    connection = await asyncpg.connect(
        host=url.host, port=url.port or 5432, user=url.username, password=url.password, database=url.database
    )
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


@pytest.fixture(scope="session", params=BACKENDS)
def migrated_backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    """Each backend's database, migrated once per session."""
    if request.param == "sqlite-memory":
        path = tmp_path_factory.mktemp("sqlite") / "tollgate.db"
        url = f"sqlite+aiosqlite:///{path}"
        upgrade_database(url)
        yield Backend("sqlite-memory", url, None)
        return
    assert PG_URL is not None
    name = f"tollgate_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    url = asyncio.run(_create_pg_database(PG_URL, name))
    upgrade_database(url)
    try:
        yield Backend("postgres-redis", url, REDIS_URL)
    finally:
        asyncio.run(_drop_pg_database(PG_URL, name))


@pytest.fixture
def backend(migrated_backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Backend:
    """The test's database. On SQLite a file of its own, copied from the migrated one: whatever
    an earlier test's apps left behind (a connection still closing, its lock) cannot reach it.
    On PostgreSQL the session's database, emptied by the test's first app (`app_factory`)."""
    if migrated_backend.name != "sqlite-memory":
        return migrated_backend
    source = make_url(migrated_backend.database_url).database
    target = tmp_path_factory.mktemp("sqlite-test") / "tollgate.db"
    with closing(sqlite3.connect(source)) as original, closing(sqlite3.connect(target)) as copy:
        original.backup(copy)
    return Backend("sqlite-memory", f"sqlite+aiosqlite:///{target}", None)


def make_settings(backend: Backend, redis_prefix: str, qdrant_path: str | None = None, **general: object) -> Settings:
    """Settings for one test. Each test has its own Redis key prefix, so tests never see each
    other's counters, while the apps of one test share it like replicas of one deployment."""
    dependencies: dict[str, object] = {
        "database": {"url": backend.database_url},
        "qdrant": {"path": qdrant_path} if qdrant_path else {"path": None, "url": "http://127.0.0.1:6333"},
    }
    if backend.redis_url:
        dependencies["redis"] = {"url": backend.redis_url, "key_prefix": redis_prefix}
    general.setdefault("usage_journal_path", None)  # never the repository's ./data: app_factory gives a folder
    # No health probes unless a test asks: they would show in the fake upstream's request log.
    general["gateway"] = {"health_check_seconds": 0, **general.get("gateway", {})}  # type: ignore[dict-item]
    return Settings(settings={"auth_master_key": MASTER_KEY, **general}, dependencies=dependencies)


async def _empty_tables(database_url: str) -> None:
    """Before a test's first app starts: what an earlier test left (a provider whose key was
    encrypted under another key, say) must not even reach that app's startup."""
    from api.db.engine import build_engine
    from api.settings import DatabaseSettings

    # The app's own engine setup: on SQLite, a write waits its turn (busy timeout, BEGIN
    # IMMEDIATE) rather than failing at once on a lock a process just leaving still holds.
    engine = build_engine(DatabaseSettings(url=database_url))
    tables = list(reversed(Base.metadata.sorted_tables))
    try:
        async with engine.begin() as connection:
            if engine.dialect.name == "postgresql":
                names = ", ".join(table.name for table in tables)
                await connection.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
            else:
                for table in tables:
                    await connection.execute(table.delete())
    finally:
        await engine.dispose()


@asynccontextmanager
async def running_app(settings: Settings, call_steps: tuple[Any, ...] = ()) -> AsyncIterator[httpx.AsyncClient]:
    """Start an app (lifespan included) and yield an HTTP client talking to it in-process.
    `call_steps` join its call pipeline."""
    app = create_app(settings, extra_call_steps=call_steps)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://tollgate.test") as client:
            client.app = app  # type: ignore[attr-defined]
            yield client


AppFactory = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def app_factory(backend: Backend) -> AsyncIterator[AppFactory]:
    """Build apps on the test's backend; the first one empties the tables. Several apps built
    here share the database and Redis, like replicas."""
    from contextlib import AsyncExitStack

    async with AsyncExitStack() as stack:
        first = True
        redis_prefix = f"tollgate-test:{uuid.uuid4().hex}:"
        # One usage journal folder per test, shared by its apps like replicas on one host.
        journal_path = stack.enter_context(tempfile.TemporaryDirectory(prefix="tollgate-journal-"))

        async def build(call_steps: tuple[Any, ...] = (), empty: bool = True, **general: object) -> httpx.AsyncClient:
            """`empty=False`: the first app keeps what the test put in the tables before it."""
            nonlocal first
            # The embedded vector store: a folder per app (one process may hold a folder at a time).
            qdrant_path = stack.enter_context(tempfile.TemporaryDirectory(prefix="tollgate-qdrant-"))
            settings = make_settings(backend, redis_prefix, qdrant_path=qdrant_path,
                                     **{"usage_journal_path": journal_path, **general})
            if first and empty:
                await _empty_tables(backend.database_url)
            first = False
            return await stack.enter_async_context(running_app(settings, call_steps))

        yield build


@pytest.fixture
async def client(app_factory: AppFactory) -> httpx.AsyncClient:
    return await app_factory()


ADMIN = {"Authorization": f"Bearer {MASTER_KEY}"}


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@dataclass(frozen=True)
class SeededUser:
    id: int
    email: str
    password: str
    role: int
    key: str
    key_id: int

    @property
    def headers(self) -> dict[str, str]:
        return bearer(self.key)


class Seeder:
    """Creates tenants through the public API, as a platform team would."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def role(self, permissions: list[str] | None = None, limits: list[dict] | None = None) -> int:
        body = {"name": f"role-{uuid.uuid4().hex[:8]}", "permissions": permissions or [], "limits": limits or []}
        response = await self.client.post("/v1/admin/roles", json=body, headers=ADMIN)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    async def organization(self) -> int:
        response = await self.client.post("/v1/admin/organizations", json={"name": f"org-{uuid.uuid4().hex[:8]}"}, headers=ADMIN)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    async def user(
        self, permissions: list[str] | None = None, organization: int | None = None,
        limits: list[dict] | None = None, **extra: object,
    ) -> SeededUser:
        role = await self.role(permissions, limits)
        email = f"user-{uuid.uuid4().hex[:8]}@example.com"
        password = "a long enough password"
        body = {"email": email, "password": password, "role": role, "organization": organization, **extra}
        response = await self.client.post("/v1/admin/users", json=body, headers=ADMIN)
        assert response.status_code == 201, response.text
        user_id = response.json()["id"]
        response = await self.client.post("/v1/admin/tokens", json={"name": "test", "user": user_id}, headers=ADMIN)
        assert response.status_code == 201, response.text
        return SeededUser(user_id, email, password, role, response.json()["token"], response.json()["id"])


@pytest.fixture
def seed(client: httpx.AsyncClient) -> Seeder:
    return Seeder(client)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


async def fake_upstream(behaviour: Behaviour | None = None) -> AsyncIterator[FakeUpstream]:
    """A fake provider serving on its own port for as long as the iteration lasts."""
    fake = FakeUpstream(behaviour=behaviour or Behaviour())
    await fake.start()
    yield fake
    await fake.stop()


@pytest.fixture
async def upstream() -> AsyncIterator[FakeUpstream]:
    async for fake in fake_upstream():
        yield fake


class Models:
    """Routers and providers through the admin API, and users who may call them."""

    def __init__(self, client: httpx.AsyncClient, seeder: Seeder) -> None:
        self.client = client
        self.seeder = seeder

    async def router(self, name: str = "chat", type: str = "text-generation", **extra: object) -> int:
        body = {"name": name, "type": type, **extra}
        response = await self.client.post("/v1/admin/routers", json=body, headers=ADMIN)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    async def provider(self, router: int, url: str, model_name: str = "fake-chat", **extra: object) -> int:
        body = {"router": router, "type": "vllm", "url": url, "model_name": model_name, **extra}
        response = await self.client.post("/v1/admin/providers", json=body, headers=ADMIN)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    async def user_for(self, *routers: int, limits: dict[str, int | None] | None = None, **extra: object) -> SeededUser:
        """A user whose role has limit rows for each router (by default one unlimited row: what
        grants access), or the given `limits` ({"rpm": 5, ...}) on each."""
        rows = [{"router": r, "type": kind, "value": value} for r in routers for kind, value in (limits or {"rpm": None}).items()]
        return await self.seeder.user(limits=rows, **extra)


@pytest.fixture
def models(client: httpx.AsyncClient, seed: Seeder) -> Models:
    return Models(client, seed)


async def usage_rows(client: httpx.AsyncClient) -> list:
    """Every usage record, after flushing the writer's queue."""
    from sqlalchemy import select

    from api.db.tables import Usage

    context = client.app.state.context  # type: ignore[attr-defined]
    await context.usage_writer.flush()
    async with context.session_factory() as session:
        return list((await session.execute(select(Usage).order_by(Usage.id))).scalars())


@asynccontextmanager
async def serving(app: Any, **uvicorn_options: object) -> AsyncIterator[int]:
    """Serve an ASGI app over real HTTP on a free port (yielded), with the HTTP protocol
    `tollgate serve` uses. `uvicorn_options` go to uvicorn.Config."""
    import uvicorn

    options: dict = {"log_level": "warning", "http": "httptools", **uvicorn_options}
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="off", **options)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await task


@asynccontextmanager
async def live_server(app_client: httpx.AsyncClient, **uvicorn_options: object) -> AsyncIterator[str]:
    """Serve an already-started app over real HTTP (for timing and disconnect tests: the
    in-process transport buffers whole responses)."""
    async with serving(app_client.app, **uvicorn_options) as port:  # type: ignore[attr-defined]
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
async def second_upstream() -> AsyncIterator[FakeUpstream]:
    async for fake in fake_upstream():
        yield fake


async def running(fake: FakeUpstream) -> AsyncIterator[Any]:
    """A fake provider (of any protocol) serving on its own port for as long as the iteration lasts."""
    await fake.start()
    yield fake
    await fake.stop()


# Fakes of the other protocols (tests/fakes/): Anthropic, Bedrock, Azure; two of each for failover.
@pytest.fixture
async def claude() -> AsyncIterator[FakeAnthropic]:
    async for fake in running(FakeAnthropic()):
        yield fake


@pytest.fixture
async def second_claude() -> AsyncIterator[FakeAnthropic]:
    async for fake in running(FakeAnthropic()):
        yield fake


@pytest.fixture
async def bedrock() -> AsyncIterator[FakeBedrock]:
    async for fake in running(FakeBedrock()):
        yield fake


@pytest.fixture
async def second_bedrock() -> AsyncIterator[FakeBedrock]:
    async for fake in running(FakeBedrock()):
        yield fake


@pytest.fixture
async def azure() -> AsyncIterator[FakeAzure]:
    async for fake in running(FakeAzure()):
        yield fake


@pytest.fixture
async def second_azure() -> AsyncIterator[FakeAzure]:
    async for fake in running(FakeAzure()):
        yield fake
