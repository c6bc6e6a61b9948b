"""No secret of a full run ever shows up in a log line, a usage record, a database row or an
API answer: passwords, API keys, provider keys, the master key and the encryption key.

The run goes over real HTTP (uvicorn, access log on) with every logger at DEBUG — the app's,
uvicorn's, SQLAlchemy's (SQL statements), aiohttp's, httpx's — and greps all of it.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
import pytest
from sqlalchemy import select

from api.db.base import Base
from conftest import MASTER_KEY, bearer, live_server, usage_rows
from fakes.upstream import FakeUpstream

ADMIN = bearer(MASTER_KEY)
PASSWORD = "first-password-" + uuid.uuid4().hex
NEW_PASSWORD = "second-password-" + uuid.uuid4().hex
WRONG_PASSWORD = "wrong-password-" + uuid.uuid4().hex
PROVIDER_KEY = "provider-key-" + uuid.uuid4().hex
NEW_PROVIDER_KEY = "provider-key-2-" + uuid.uuid4().hex
BOGUS_KEY = "bogus-key-" + uuid.uuid4().hex
# A Fernet-sized secret of our own, so the test also proves the encryption key stays hidden.
ENCRYPTION_KEY = "encryption-key-" + uuid.uuid4().hex
LOGGERS = ("", "tollgate", "uvicorn", "uvicorn.access", "uvicorn.error", "sqlalchemy", "sqlalchemy.engine",
           "sqlalchemy.pool", "aiohttp", "aiohttp.client", "aiohttp.access", "httpx", "httpcore", "asyncio")


@pytest.fixture
async def keyed_upstream() -> AsyncIterator[FakeUpstream]:
    fake = FakeUpstream(api_key=PROVIDER_KEY)
    await fake.start()
    yield fake
    await fake.stop()


@asynccontextmanager
async def verbose_server(app_client: httpx.AsyncClient) -> AsyncIterator[httpx.AsyncClient]:
    """The app over real HTTP with uvicorn logging everything (its access log included) to the
    root logger, where caplog listens: log_config=None keeps uvicorn's loggers propagating."""
    async with live_server(app_client, log_config=None, log_level="debug", access_log=True) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            yield client


def _check(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, (response.request.method, response.request.url, response.text)
    return response.json() if response.headers.get("content-type", "").startswith("application/json") else {}


async def test_no_secret_reaches_logs_records_rows_or_answers(app_factory, keyed_upstream, caplog, capfd) -> None:
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)
    app_client = await app_factory(encryption_key=ENCRYPTION_KEY)
    answers: list[str] = []  # every body the API sent back after the secret was created

    async with verbose_server(app_client) as http:

        async def call(method: str, path: str, status: int, shows_a_key: bool = False, **kwargs: object) -> dict:
            response = await http.request(method, path, **kwargs)  # type: ignore[arg-type]
            if not shows_a_key:  # a new key is shown once, in the answer that creates it
                answers.append(response.text)
            return _check(response, status)

        # The platform team sets up a tenant and a model.
        organization = (await call("POST", "/v1/admin/organizations", 201, json={"name": "org"}, headers=ADMIN))["id"]
        router = (await call("POST", "/v1/admin/routers", 201, json={"name": "chat", "type": "text-generation"}, headers=ADMIN))["id"]
        provider = (await call("POST", "/v1/admin/providers", 201, headers=ADMIN, json={
            "router": router, "type": "vllm", "url": keyed_upstream.base_url, "model_name": "fake-chat", "key": PROVIDER_KEY}))["id"]
        role = (await call("POST", "/v1/admin/roles", 201, headers=ADMIN, json={
            "name": "people", "permissions": [], "limits": [{"router": router, "type": "rpm", "value": None}]}))["id"]
        user = (await call("POST", "/v1/admin/users", 201, headers=ADMIN, json={
            "email": "alice@example.com", "password": PASSWORD, "role": role, "organization": organization, "budget": 100}))["id"]
        admin_token = (await call("POST", "/v1/admin/tokens", 201, True, json={"name": "ops", "user": user}, headers=ADMIN))["token"]

        # The user logs in, makes a key of their own, and calls the model with it.
        playground = (await call("POST", "/v1/auth/login", 200, True, json={"email": "alice@example.com", "password": PASSWORD}))["key"]
        created = await call("POST", "/v1/me/keys", 201, True, json={"name": "laptop"}, headers=bearer(playground))
        user_key, user_key_id = created["token"], created["id"]
        chat = {"model": "chat", "messages": [{"role": "user", "content": "hello there"}]}
        await call("POST", "/v1/chat/completions", 200, json=chat, headers=bearer(user_key))
        await call("POST", "/v1/chat/completions", 200, json={**chat, "stream": True}, headers=bearer(admin_token))
        await call("GET", "/v1/me/info", 200, headers=bearer(user_key))

        # Failures: a wrong password, an unknown key, a revoked key, a 422 on a password.
        await call("POST", "/v1/auth/login", 401, json={"email": "alice@example.com", "password": WRONG_PASSWORD})
        await call("GET", "/v1/models", 401, headers=bearer(BOGUS_KEY))
        await call("DELETE", f"/v1/me/keys/{user_key_id}", 204, headers=bearer(playground))
        await call("POST", "/v1/chat/completions", 401, json=chat, headers=bearer(user_key))
        await call("POST", "/v1/admin/users", 422, headers=ADMIN,
                   json={"email": "bob@example.com", "password": PASSWORD, "role": role, "budget": "lots"})

        # The password and the provider key change.
        await call("PATCH", "/v1/me/info", 204, json={"current_password": PASSWORD, "password": NEW_PASSWORD}, headers=bearer(playground))
        # (Changing the password ends the playground sessions: log in again.)
        again = (await call("POST", "/v1/auth/login", 200, True, json={"email": "alice@example.com", "password": NEW_PASSWORD}))["key"]
        keyed_upstream.api_key = NEW_PROVIDER_KEY
        await call("PATCH", f"/v1/admin/providers/{provider}", 204, json={"key": NEW_PROVIDER_KEY}, headers=ADMIN)
        await call("POST", "/v1/chat/completions", 200, json=chat, headers=bearer(admin_token))

        # What the API lists about keys, providers and users.
        listings = [
            await call("GET", "/v1/me/keys", 200, headers=bearer(again)),
            await call("GET", "/v1/admin/tokens", 200, headers=ADMIN),
            await call("GET", f"/v1/admin/tokens/{created['id']}", 404, headers=ADMIN),  # deleted
            await call("GET", "/v1/admin/providers", 200, headers=ADMIN),
            await call("GET", f"/v1/admin/providers/{provider}", 200, headers=ADMIN),
            await call("GET", "/v1/admin/users", 200, headers=ADMIN),
            await call("GET", "/v1/me/usage", 200, headers=bearer(again)),
        ]

    # The provider really got its key (so the key went somewhere, just not to the logs).
    assert {r.headers.get("Authorization") for r in keyed_upstream.received} >= {f"Bearer {PROVIDER_KEY}", f"Bearer {NEW_PROVIDER_KEY}"}
    assert listings[1]["total"] >= 2
    # Providers show that a key is set and its last characters, never the key.
    assert listings[3]["data"][0]["key"] == listings[4]["key"] == "***" + NEW_PROVIDER_KEY[-4:]

    secrets = {"password": PASSWORD, "new password": NEW_PASSWORD, "wrong password": WRONG_PASSWORD,
               "provider key": PROVIDER_KEY, "new provider key": NEW_PROVIDER_KEY, "unknown key": BOGUS_KEY,
               "master key": MASTER_KEY, "encryption key": ENCRYPTION_KEY, "admin token": admin_token,
               "playground key": playground, "second playground key": again, "user key": user_key}
    captured = capfd.readouterr()
    logs = "\n".join(f"{r.name} {r.levelname} {r.getMessage()} {r.exc_text or ''} {vars(r)}" for r in caplog.records)
    # SQLAlchemy's statement log ran, so the grep covers SQL (parameters hidden).
    assert any(r.name.startswith("sqlalchemy.engine") for r in caplog.records)
    assert any(r.name == "uvicorn.access" for r in caplog.records)
    rows = [repr(vars(row)) for row in await usage_rows(app_client)]
    assert len(rows) >= 3  # the three chats (the refused ones never reached a model)
    places = {"logs": logs, "stdout": captured.out, "stderr": captured.err, "usage records": "\n".join(rows),
              "answers": "\n".join(answers), "database": await _database_dump(app_client),
              "redis": await _redis_dump(app_client)}
    leaks = [f"{what} in {where}" for where, text in places.items() for what, secret in secrets.items() if secret in text]
    assert not leaks, leaks


async def _database_dump(client: httpx.AsyncClient) -> str:
    """Every row of every table, as text: passwords and keys are stored hashed, provider keys
    encrypted."""
    context = client.app.state.context  # type: ignore[attr-defined]
    lines = []
    async with context.session_factory() as session:
        for table in Base.metadata.sorted_tables:
            for row in (await session.execute(select(table))).all():
                lines.append(f"{table.name} {tuple(row)!r}")
    assert any(line.startswith("providers ") for line in lines)
    return "\n".join(lines)


async def _redis_dump(client: httpx.AsyncClient) -> str:
    """Every key of this test's prefix in Redis, with its value (PostgreSQL + Redis backend)."""
    context = client.app.state.context  # type: ignore[attr-defined]
    if context.redis is None:
        return ""
    prefix = context.settings.dependencies.redis.key_prefix
    lines = []
    async for key in context.redis.scan_iter(match=prefix + "*", count=1000):
        kind = await context.redis.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        value = {"string": context.redis.get, "hash": context.redis.hgetall, "zset": lambda k: context.redis.zrange(k, 0, -1),
                 "list": lambda k: context.redis.lrange(k, 0, -1), "set": context.redis.smembers}.get(kind)
        lines.append(f"{key!r} {await value(key) if value else kind!r}")
    assert lines, "the run left counters in Redis"
    return "\n".join(lines)
