"""Who may do what: every endpoint × every kind of caller, as one table.

Columns: anonymous (no key), an expired key, a revoked (deleted) key, the user who owns the
resources in the paths, another user of the same organization, a user of another
organization, a user with the `admin` permission, and the master key. A cell is the status the
caller gets. Private collections and documents are their owner's alone: others — an admin too
— get 404, as if they did not exist. `docs/security.md` prints this table
(`python tests/test_authorization_matrix.py` writes it).
"""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import update

from conftest import ADMIN, Models, Seeder, SeededUser
from fakes.upstream import Behaviour, FakeUpstream
from pdfs import make_pdf

CALLERS = ("anonymous", "expired", "revoked", "owner", "same_org", "other_org", "admin", "master")

# (method, path, body) → statuses in CALLERS order. Paths use the owner's resources:
# {org} {role} {user} {key} {router} {provider} {collection} {document}. Bodies are valid.
J = "json"
MATRIX: list[tuple[str, str, object, str]] = [
    ("GET", "/health", None, "200 200 200 200 200 200 200 200"),
    ("GET", "/metrics", None, "401 401 401 403 403 403 403 200"),  # read_metric, not admin
    ("GET", "/health/models", None, "401 401 401 403 403 403 403 200"),  # read_metric, like /metrics
    ("POST", "/v1/auth/login", "login", "200 200 200 200 200 200 200 200"),
    ("GET", "/v1/models", None, "401 401 401 200 200 200 200 200"),
    ("GET", "/v1/models/chat", None, "401 401 401 200 404 404 404 200"),
    ("POST", "/v1/chat/completions", {"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
     "401 401 401 200 404 404 404 200"),
    ("POST", "/v1/completions", {"model": "chat", "prompt": "hi"}, "401 401 401 200 404 404 404 200"),
    ("POST", "/v1/messages", {"model": "chat", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]},
     "401 401 401 200 404 404 404 200"),  # Anthropic's Messages API: the chat's rules
    ("POST", "/v1/embeddings", {"model": "embeddings", "input": "hi"}, "401 401 401 200 404 404 404 200"),
    ("POST", "/v1/rerank", {"model": "rerank", "query": "q", "documents": ["d"]}, "401 401 401 200 404 404 404 200"),
    ("GET", "/v1/me/info", None, "401 401 401 200 200 200 200 403"),
    ("PATCH", "/v1/me/info", {"name": "New Name"}, "401 401 401 204 204 204 204 403"),
    ("GET", "/v1/me/keys", None, "401 401 401 200 200 200 200 403"),
    ("POST", "/v1/me/keys", {"name": "k"}, "401 401 401 201 201 201 201 403"),
    ("GET", "/v1/me/keys/{key}", None, "401 401 401 200 404 404 404 403"),
    ("PATCH", "/v1/me/keys/{key}", {"tags": ["matrix"]}, "401 401 401 204 404 404 404 403"),
    ("POST", "/v1/me/keys/{spare_key}/revoke", {"reason": "matrix"}, "401 401 401 204 404 404 404 403"),
    ("DELETE", "/v1/me/keys/{spare_key}", None, "401 401 401 204 404 404 404 403"),
    ("GET", "/v1/me/usage", None, "401 401 401 200 200 200 200 403"),
    ("GET", "/v1/me/sessions", None, "401 401 401 200 200 200 200 403"),
    ("GET", "/v1/admin/sessions", None, "401 401 401 403 403 403 200 200"),
    ("GET", "/v1/admin/organizations", None, "401 401 401 403 403 403 200 200"),
    ("POST", "/v1/admin/organizations", {"name": "new-org-{n}"}, "401 401 401 403 403 403 201 201"),
    ("GET", "/v1/admin/organizations/{org}", None, "401 401 401 403 403 403 200 200"),
    ("PATCH", "/v1/admin/organizations/{org}", {"name": "renamed-{n}"}, "401 401 401 403 403 403 204 204"),
    ("PATCH", "/v1/admin/organizations/{org}", {"budget": 5}, "401 401 401 403 403 403 204 204"),
    ("POST", "/v1/admin/organizations/{org}/budget", {"amount": 1}, "401 401 401 403 403 403 201 201"),
    ("GET", "/v1/admin/organizations/{org}/budget", None, "401 401 401 403 403 403 200 200"),
    ("GET", "/v1/admin/roles", None, "401 401 401 403 403 403 200 200"),
    ("GET", "/v1/admin/roles/{role}", None, "401 401 401 403 403 403 200 200"),
    ("PATCH", "/v1/admin/roles/{role}", {"name": "role-{n}"}, "401 401 401 403 403 403 204 204"),
    ("GET", "/v1/admin/users", None, "401 401 401 403 403 403 200 200"),
    ("GET", "/v1/admin/users/{user}", None, "401 401 401 403 403 403 200 200"),
    ("PATCH", "/v1/admin/users/{user}", {"name": "Renamed"}, "401 401 401 403 403 403 204 204"),
    ("GET", "/v1/admin/users/{user}/budget", None, "401 401 401 403 403 403 200 200"),
    ("POST", "/v1/admin/users/{user}/budget", {"amount": 1, "reason": "matrix"}, "401 401 401 403 403 403 201 201"),
    ("GET", "/v1/admin/tokens", None, "401 401 401 403 403 403 200 200"),
    ("GET", "/v1/admin/tokens/{key}", None, "401 401 401 403 403 403 200 200"),
    ("PATCH", "/v1/admin/tokens/{key}", {"budget": 5}, "401 401 401 403 403 403 204 204"),
    ("POST", "/v1/admin/tokens/{key}/budget", {"amount": 1}, "401 401 401 403 403 403 201 201"),
    ("GET", "/v1/admin/tokens/{key}/budget", None, "401 401 401 403 403 403 200 200"),
    ("GET", "/v1/admin/usage", None, "401 401 401 403 403 403 200 200"),
    ("POST", "/v1/admin/policies", {"name": "policy-{n}", "rules": [{"detector": "email", "action": "allow"}]},
     "401 401 401 403 403 403 201 201"),
    ("GET", "/v1/admin/policies", None, "401 401 401 403 403 403 200 200"),
    ("GET", "/v1/admin/usage/top", None, "401 401 401 403 403 403 200 200"),
    ("GET", "/v1/admin/usage/records", None, "401 401 401 403 403 403 200 200"),
    ("GET", "/v1/admin/routers", None, "401 401 401 403 403 403 200 200"),
    ("GET", "/v1/admin/routers/{router}", None, "401 401 401 403 403 403 200 200"),
    ("PATCH", "/v1/admin/routers/{router}", {"cost_prompt_tokens": 1}, "401 401 401 403 403 403 204 204"),
    ("GET", "/v1/admin/providers", None, "401 401 401 403 403 403 200 200"),
    ("GET", "/v1/admin/providers/{provider}", None, "401 401 401 403 403 403 200 200"),
    ("PATCH", "/v1/admin/providers/{provider}", {"timeout": 30}, "401 401 401 403 403 403 204 204"),
    ("GET", "/v1/collections", None, "401 401 401 200 200 200 200 200"),
    ("POST", "/v1/collections", {"name": "mine"}, "401 401 401 201 201 201 201 403"),
    ("GET", "/v1/collections/{collection}", None, "401 401 401 200 404 404 404 404"),
    ("PATCH", "/v1/collections/{collection}", {"description": "d"}, "401 401 401 204 404 404 404 404"),
    ("GET", "/v1/documents", None, "401 401 401 200 200 200 200 200"),
    ("POST", "/v1/documents", "upload", "401 401 401 201 404 404 404 403"),
    ("GET", "/v1/documents/{document}", None, "401 401 401 200 404 404 404 404"),
    ("POST", "/v1/documents/{document}/chunks", {"chunks": [{"content": "more"}]}, "401 401 401 201 404 404 404 404"),
    ("GET", "/v1/documents/{document}/chunks", None, "401 401 401 200 404 404 404 404"),
    ("GET", "/v1/documents/{document}/chunks/1", None, "401 401 401 200 404 404 404 404"),
    ("GET", "/v1/chunks/{document}", None, "401 401 401 200 404 404 404 404"),
    ("GET", "/v1/chunks/{document}/1", None, "401 401 401 200 404 404 404 404"),
    ("POST", "/v1/search", {"query": "apples", "collection_ids": ["{collection}"]}, "401 401 401 200 404 404 404 404"),
    ("POST", "/v1/parse", "pdf", "401 401 401 200 200 200 200 200"),
    ("DELETE", "/v1/documents/{document}/chunks/1", None, "401 401 401 204 404 404 404 404"),
    ("DELETE", "/v1/documents/{document}", None, "401 401 401 204 404 404 404 404"),
    ("DELETE", "/v1/collections/{collection}", None, "401 401 401 204 404 404 404 404"),
    ("POST", "/v1/admin/tokens/{other_key}/revoke", {}, "401 401 401 403 403 403 204 204"),
    ("DELETE", "/v1/admin/tokens/{other_key}", None, "401 401 401 403 403 403 204 404"),  # the admin deleted it
]


@dataclass
class World:
    client: httpx.AsyncClient
    headers: dict[str, dict[str, str]]
    owner: SeededUser
    ids: dict[str, int]


async def build_world(client: httpx.AsyncClient, upstream: FakeUpstream) -> World:
    seed = Seeder(client)
    models = Models(client, seed)
    routers = {}
    for name, kind, model in (("chat", "text-generation", "fake-chat"), ("embeddings", "text-embeddings-inference", "fake-embed"),
                              ("rerank", "text-classification", "fake-chat")):
        routers[name] = await models.router(name, type=kind)
        provider = await models.provider(routers[name], upstream.base_url, model_name=model)
    org, other_org = await seed.organization(), await seed.organization()
    limits = [{"router": r, "type": "rpm", "value": None} for r in routers.values()]
    owner = await seed.user(organization=org, limits=limits, budget=10)
    same_org = await seed.user(organization=org)
    other = await seed.user(organization=other_org)
    admin = await seed.user(permissions=["admin"], organization=org)
    expired = await seed.user(organization=org, limits=limits)
    revoked = await seed.user(organization=org, limits=limits)
    context = client.app.state.context  # type: ignore[attr-defined]
    from api.db.tables import ApiKey

    async with context.session_factory() as session:
        await session.execute(update(ApiKey).where(ApiKey.id == expired.key_id)
                              .values(expires=datetime.now(UTC) - timedelta(minutes=1)))
        await session.commit()
    context.authenticator.forget_all()
    assert (await client.delete(f"/v1/me/keys/{revoked.key_id}", headers=revoked.headers)).status_code == 204

    collection = (await client.post("/v1/collections", json={"name": "private"}, headers=owner.headers)).json()["id"]
    document = (await client.post("/v1/documents", data={"collection_id": str(collection), "name": "notes"},
                                  headers=owner.headers)).json()["id"]
    added = await client.post(f"/v1/documents/{document}/chunks", json={"chunks": [{"content": "apples"}]}, headers=owner.headers)
    assert added.status_code == 201, added.text
    spare = await client.post("/v1/me/keys", json={"name": "spare"}, headers=owner.headers)
    other_key = await client.post("/v1/me/keys", json={"name": "other"}, headers=owner.headers)
    headers = {
        "anonymous": {}, "expired": expired.headers, "revoked": revoked.headers, "owner": owner.headers,
        "same_org": same_org.headers, "other_org": other.headers, "admin": admin.headers, "master": ADMIN,
    }
    ids = {"org": org, "role": owner.role, "user": owner.id, "key": owner.key_id, "router": routers["chat"],
           "provider": provider, "collection": collection, "document": document,
           "spare_key": spare.json()["id"], "other_key": other_key.json()["id"]}
    return World(client, headers, owner, ids)


def _fill(value: object, ids: dict[str, int], n: int) -> object:
    if isinstance(value, str):
        text = value.replace("{n}", str(n))
        for name, number in ids.items():
            if text == "{" + name + "}":
                return number
            text = text.replace("{" + name + "}", str(number))
        return text
    if isinstance(value, list):
        return [_fill(item, ids, n) for item in value]
    if isinstance(value, dict):
        return {key: _fill(item, ids, n) for key, item in value.items()}
    return value


async def call(world: World, caller: str, method: str, path: str, body: object, n: int) -> int:
    url = str(_fill(path, world.ids, n))
    headers = world.headers[caller]
    if body == "login":
        response = await world.client.post(url, json={"email": world.owner.email, "password": world.owner.password})
    elif body == "upload":
        response = await world.client.request(method, url, headers=headers, files={"file": ("a.md", b"apples and pears")},
                                              data={"collection_id": str(world.ids["collection"])})
    elif body == "pdf":
        response = await world.client.request(method, url, headers=headers, files={"file": ("a.pdf", make_pdf(["apples"]))})
    elif body is None:
        response = await world.client.request(method, url, headers=headers)
    else:
        response = await world.client.request(method, url, headers=headers, json=_fill(body, world.ids, n))
    return response.status_code


@pytest.fixture
async def matrix_upstream():
    fake = FakeUpstream(behaviour=Behaviour(embedding_dimensions=32))
    await fake.start()
    yield fake
    await fake.stop()


async def test_authorization_matrix(app_factory, matrix_upstream) -> None:
    client = await app_factory(rag={"vector_store_model": "embeddings", "ingestion_concurrency": 0},
                               login={"max_failures": 1000})
    world = await build_world(client, matrix_upstream)
    mismatches = []
    n = 0
    for method, path, body, expected in MATRIX:
        for caller, status in zip(CALLERS, expected.split(), strict=True):
            n += 1
            got = await call(world, caller, method, path, body, n)
            if str(got) != status:
                mismatches.append(f"{method} {path} as {caller}: expected {status}, got {got}")
    assert not mismatches, "\n".join(mismatches)


def test_every_endpoint_is_in_the_matrix() -> None:
    from api.http.app import create_app
    from api.settings import Settings

    documented = {(m, p) for m, p, _, _ in MATRIX}
    spec = create_app(Settings()).openapi()
    missing = []
    for path, operations in spec["paths"].items():
        generic = path
        for name in ("organization", "role", "user", "token", "key", "router_id", "provider_id", "collection_id",
                     "document_id", "chunk_id", "model", "document", "chunk"):
            generic = generic.replace("{" + name + "}", "*")
        for method in operations:
            if not any(m == method.upper() and _matches(generic, p) for m, p in documented):
                missing.append(f"{method.upper()} {path}")
    # Left out on purpose: they need a second organization/role/user/router of their own to
    # delete, or an audio file; their rules are those of the rows above them.
    allowed = {"POST /v1/admin/roles", "DELETE /v1/admin/roles/{role}", "POST /v1/admin/users",
               "DELETE /v1/admin/users/{user}", "POST /v1/admin/tokens", "DELETE /v1/admin/organizations/{organization}",
               "POST /v1/admin/routers", "DELETE /v1/admin/routers/{router_id}", "POST /v1/admin/providers",
               "DELETE /v1/admin/providers/{provider_id}", "POST /v1/audio/transcriptions", "POST /v1/ocr",
               "GET /v1/admin/policies/{policy}", "PATCH /v1/admin/policies/{policy}", "DELETE /v1/admin/policies/{policy}",
               # A session exists only once a call was kept: their rules are test_conversations'.
               "GET /v1/me/sessions/{session_id}", "DELETE /v1/me/sessions/{session_id}",
               "GET /v1/admin/sessions/{session_id}", "DELETE /v1/admin/sessions/{session_id}"}
    assert set(missing) <= allowed, sorted(set(missing) - allowed)


def _matches(generic: str, documented: str) -> bool:
    documented_parts = documented.split("/")
    generic_parts = generic.split("/")
    if len(documented_parts) != len(generic_parts):
        return False
    return all(g == d or g == "*" for g, d in zip(generic_parts, documented_parts, strict=True))


def markdown_table() -> str:
    lines = ["| endpoint | " + " | ".join(CALLERS) + " |", "|---|" + "---|" * len(CALLERS)]
    for method, path, _, expected in MATRIX:
        lines.append(f"| `{method} {path}` | " + " | ".join(expected.split()) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(markdown_table() + "\n")
    _ = (asyncio, json)  # the module also serves as a script
