"""Bad input gets a clear 4xx JSON answer, never a 500 and never a half-written record."""

import asyncio
import json
import time

import pytest

from conftest import ADMIN, Models, SeededUser, Seeder, fake_upstream
from fakes.upstream import Behaviour, FakeUpstream
from pdfs import make_pdf


@pytest.mark.parametrize(
    "content",
    [b"{", b"[]", b"null", b'"string"', b'{"name": 5}', b'{"name": ["a"]}', b'{"name": {"$gt": ""}}', b"\xff\xfe\x00garbage"],
)
async def test_malformed_bodies_are_422(client, content: bytes) -> None:
    response = await client.post("/v1/admin/organizations", content=content, headers={**ADMIN, "content-type": "application/json"})
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/json"
    assert (await client.get("/v1/admin/organizations", headers=ADMIN)).json()["total"] == 0


async def test_oversized_strings_are_422(client, seed: Seeder) -> None:
    assert (await client.post("/v1/admin/organizations", json={"name": "o" * 10_000}, headers=ADMIN)).status_code == 422
    user = await seed.user()
    assert (await client.post("/v1/me/keys", json={"name": "k" * 256}, headers=user.headers)).status_code == 422
    assert (await client.patch("/v1/me/info", json={"name": "n" * 256}, headers=user.headers)).status_code == 422


@pytest.mark.parametrize("path_id", ["0", "-1", "abc", "1.5", str(2**31), str(2**63), "9" * 40])
async def test_impossible_ids_are_422(client, path_id: str) -> None:
    for path in ("organizations", "roles", "users", "tokens"):
        response = await client.get(f"/v1/admin/{path}/{path_id}", headers=ADMIN)
        assert response.status_code == 422, (path, path_id)


async def test_impossible_references_are_422(client, seed: Seeder) -> None:
    role = await seed.role()
    for body in ({"role": 2**31}, {"role": role, "organization": 2**63}, {"role": role, "expires": 10**15}):
        response = await client.post("/v1/admin/users", json={"email": "r@example.com", "password": "12345678", **body}, headers=ADMIN)
        assert response.status_code == 422, body
    assert (await client.post("/v1/admin/roles", json={"name": "x", "limits": [{"router": 2**40, "type": "rpm"}]}, headers=ADMIN)).status_code == 422


async def test_body_over_the_limit_is_413(app_factory) -> None:
    client = await app_factory(max_request_body_bytes=4096)
    big = {"name": "x" * 5000}
    response = await client.post("/v1/admin/organizations", json=big, headers=ADMIN)
    assert response.status_code == 413 and "larger than 4096" in response.json()["detail"]

    async def chunked():  # no Content-Length: the limit must hold while streaming too
        for _ in range(10):
            yield b" " * 1000

    response = await client.post("/v1/admin/organizations", content=chunked(), headers={**ADMIN, "content-type": "application/json"})
    assert response.status_code == 413
    assert (await client.get("/v1/admin/organizations", headers=ADMIN)).json()["total"] == 0


async def test_unknown_route_and_method_are_json(client) -> None:
    missing = await client.get("/v1/nothing-here", headers=ADMIN)
    assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}
    wrong_method = await client.put("/v1/admin/users", headers=ADMIN)
    assert wrong_method.status_code == 405 and "detail" in wrong_method.json()


async def test_deeply_nested_json_is_rejected_cleanly(client) -> None:
    nested = b'{"name": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = await client.post("/v1/admin/organizations", content=nested, headers={**ADMIN, "content-type": "application/json"})
    assert response.status_code == 400 and "parsing the body" in response.json()["detail"]


async def test_inputs_json_cannot_echo_are_422_and_never_logged(client, seed: Seeder, caplog) -> None:
    role = await seed.role()
    bodies = [
        b'{"email": "nan@example.com", "password": "LEAKED-PASSWORD-1", "role": %d, "budget": NaN}' % role,
        b'{"email": "inf@example.com", "password": "LEAKED-PASSWORD-1", "role": %d, "budget": 1e1000}' % role,
        b'{"email": "\\ud800@example.com", "password": "LEAKED-PASSWORD-1", "role": %d}' % role,
        b'{"email": "s@example.com", "name": "\\ud83d", "password": "LEAKED-PASSWORD-1", "role": %d}' % role,
    ]
    for body in bodies:
        response = await client.post("/v1/admin/users", content=body, headers={**ADMIN, "content-type": "application/json"})
        assert response.status_code == 422, body
        assert "LEAKED-PASSWORD-1" not in response.text
    login = await client.post("/v1/auth/login", content=b'{"email": "\\ud800", "password": "LEAKED-PASSWORD-1"}',
                              headers={"content-type": "application/json"})
    assert login.status_code == 422
    assert "LEAKED-PASSWORD-1" not in caplog.text
    assert (await client.get("/v1/admin/users", headers=ADMIN)).json()["total"] == 0


async def test_nul_characters_are_refused_before_the_database(client, seed: Seeder) -> None:
    role = await seed.role()
    for body in ({"email": "a\u0000b@example.com", "password": "12345678", "role": role},
                 {"email": "ok@example.com", "name": "x\u0000y", "password": "12345678", "role": role}):
        assert (await client.post("/v1/admin/users", json=body, headers=ADMIN)).status_code == 422
    assert (await client.post("/v1/admin/organizations", json={"name": "o\u0000x"}, headers=ADMIN)).status_code == 422
    assert (await client.post("/v1/auth/login", json={"email": "u\u0000@example.com", "password": "x"})).status_code == 422
    response = await client.get("/v1/admin/users?email=a%00b", headers=ADMIN)
    assert response.status_code == 400 and "NUL" in response.json()["detail"]


async def test_email_that_grows_when_lowercased_is_422(client, seed: Seeder) -> None:
    role = await seed.role()
    body = {"email": "\u0130" * 240 + "@example.com", "password": "12345678", "role": role}
    assert (await client.post("/v1/admin/users", json=body, headers=ADMIN)).status_code == 422


async def test_renaming_a_role_to_a_taken_name_with_limits_is_409(client, seed: Seeder) -> None:
    first, second = await seed.role(), await seed.role()
    taken = (await client.get(f"/v1/admin/roles/{first}", headers=ADMIN)).json()["name"]
    response = await client.patch(f"/v1/admin/roles/{second}", json={"name": taken, "limits": []}, headers=ADMIN)
    assert response.status_code == 409 and "already exists" in response.json()["detail"]


async def test_concurrent_limit_updates_of_one_role_never_fail(client, seed: Seeder) -> None:
    role = await seed.role()
    updates = [client.patch(f"/v1/admin/roles/{role}", json={"limits": [{"router": 1, "type": "tpm", "value": i}]}, headers=ADMIN)
               for i in range(20)]
    statuses = [r.status_code for r in await asyncio.gather(*updates)]
    assert set(statuses) <= {204, 409} and statuses.count(204) >= 1, statuses
    limits = (await client.get(f"/v1/admin/roles/{role}", headers=ADMIN)).json()["limits"]
    assert len(limits) == 1 and limits[0]["router"] == 1


async def test_one_unstorable_usage_record_does_not_block_the_others(client) -> None:
    from api.usage.records import UsageRecord

    writer = client.app.state.context.usage_writer
    common = {"endpoint": "/v1/chat/completions", "method": "POST", "status": 200, "user_id": None,
              "organization_id": None, "key_id": None, "key_name": None}
    await writer.record(UsageRecord(request_id="bad", model="a\u0000b", **common))
    await writer.record(UsageRecord(request_id="good", model="fine", **common))
    await asyncio.wait_for(writer.flush(), timeout=10)
    from conftest import usage_rows

    assert "good" in {r.request_id for r in await usage_rows(client)}


# Huge arrays, invalid UTF-8, file names, filters aimed at other tenants.


async def _chat_user(models: Models, upstream: FakeUpstream) -> SeededUser:
    router = await models.router("chat")
    await models.provider(router, upstream.base_url)
    return await models.user_for(router)


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/chat/completions", {"model": "chat", "messages": [{"role": "user", "content": "hi"}] * 100_000}),
    ("/v1/embeddings", {"model": "chat", "input": ["hi"] * 100_000}),
    ("/v1/rerank", {"model": "chat", "query": "q", "documents": ["d"] * 100_000}),
])
async def test_huge_arrays_are_422_fast_and_not_echoed(client, models: Models, upstream: FakeUpstream, path: str, body: dict) -> None:
    user = await _chat_user(models, upstream)
    started = time.monotonic()
    response = await client.post(path, json=body, headers=user.headers)
    assert response.status_code == 422, response.text[:500]
    assert time.monotonic() - started < 5
    # The refusal names the limit; it does not send the 100,000 items back.
    assert len(response.content) < 10_000 and "at most" in response.text
    assert upstream.received == []


@pytest.mark.parametrize("text", [b"caf\xe9", b"\xc0\xaf", b"\xff\xfe", b"\xed\xa0\x80", b"ok\x80", b"\\ud800"])
async def test_invalid_utf8_in_a_json_string_is_4xx(client, models: Models, upstream: FakeUpstream, text: bytes) -> None:
    user = await _chat_user(models, upstream)
    json_headers = {"content-type": "application/json"}
    calls = [
        ("/v1/admin/organizations", b'{"name": "%s"}' % text, ADMIN),
        ("/v1/chat/completions", b'{"model": "chat", "messages": [{"role": "user", "content": "%s"}]}' % text, user.headers),
        ("/v1/auth/login", b'{"email": "a@example.com", "password": "%s"}' % text, {}),
        ("/v1/me/keys", b'{"name": "%s"}' % text, user.headers),
    ]
    for path, body, headers in calls:
        response = await client.post(path, content=body, headers={**headers, **json_headers})
        assert response.status_code in (400, 422), (path, response.status_code, response.text)
        assert "detail" in response.json()
    assert upstream.received == []
    assert (await client.get("/v1/admin/organizations", headers=ADMIN)).json()["total"] == 0
    assert len((await client.get("/v1/me/keys", headers=user.headers)).json()["data"]) == 1


async def test_budget_change_of_a_missing_user_is_404(client) -> None:
    # Schemathesis found it: the ledger row was written first and failed its foreign key (500).
    for body in ({"budget": None}, {"budget": 5, "name": "x"}):
        response = await client.patch(f"/v1/admin/users/{2**31 - 1}", json=body, headers=ADMIN)
        assert response.status_code == 404, response.text


@pytest.fixture
async def embedding_upstream():
    async for fake in fake_upstream(Behaviour(embedding_dimensions=32)):
        yield fake


@pytest.fixture
async def rag_client(app_factory, embedding_upstream):
    client = await app_factory(rag={"vector_store_model": "embeddings", "ingestion_concurrency": 1})
    models = Models(client, Seeder(client))
    embeddings = await models.router("embeddings", type="text-embeddings-inference")
    await models.provider(embeddings, embedding_upstream.base_url, model_name="fake-embed")
    chat = await models.router("chat")
    await models.provider(chat, embedding_upstream.base_url)
    client.models = models  # type: ignore[attr-defined]
    client.routers = (embeddings, chat)  # type: ignore[attr-defined]
    return client


async def _ready(client, user: SeededUser, document: int) -> dict:
    for _ in range(400):
        body = (await client.get(f"/v1/documents/{document}", headers=user.headers)).json()
        if body["status"] != "processing":
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(body)


TRAVERSALS = ["../../etc/passwd", "..\\..\\..\\windows\\win.ini", "/etc/passwd", "....//....//etc/passwd",
              "a/../../../../tmp/evil.txt", "..", ".", "../", "C:\\Windows\\evil.txt", "%2e%2e%2fetc%2fpasswd",
              "./" * 200 + "deep.txt"]


async def test_uploaded_file_names_cannot_traverse_paths(rag_client, tmp_path, monkeypatch) -> None:
    """A file name is a label: stored as its last component, never used as a path. Nothing
    appears under the working directory, whatever the name."""
    workdir = tmp_path / "a" / "b" / "c"
    workdir.mkdir(parents=True)
    monkeypatch.chdir(workdir)
    user = await rag_client.models.user_for(*rag_client.routers)
    collection = (await rag_client.post("/v1/collections", json={"name": "c"}, headers=user.headers)).json()["id"]
    for filename in TRAVERSALS:
        response = await rag_client.post("/v1/documents", headers=user.headers, data={"collection_id": str(collection)},
                                         files={"file": (filename, b"root:x:0:0 hello", "text/plain")})
        assert response.status_code in (201, 415), (filename, response.text)
        if response.status_code == 201:
            document = await _ready(rag_client, user, response.json()["id"])
            assert document["status"] == "ready", (filename, document)
            name = document["name"]
            assert "/" not in name and "\\" not in name and name not in ("", ".", ".."), (filename, name)
        parsed = await rag_client.post("/v1/parse", headers=user.headers, files={"file": (filename + ".pdf", make_pdf(["x"]))})
        assert parsed.status_code in (200, 415), (filename, parsed.text)  # "../.pdf" is ".pdf": no type
        if parsed.status_code == 200:
            assert "/" not in parsed.json()["data"][0]["metadata"]["document_name"]
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == ["a", "a/b", "a/b/c"]


@pytest.mark.parametrize("method", ["semantic", "lexical", "hybrid"])
async def test_filters_naming_another_tenants_ids_reach_nothing_of_theirs(rag_client, embedding_upstream, method: str) -> None:
    owner = await rag_client.models.user_for(*rag_client.routers)
    attacker = await rag_client.models.user_for(*rag_client.routers)
    private = (await rag_client.post("/v1/collections", json={"name": "secret"}, headers=owner.headers)).json()["id"]
    # The owner's chunk even carries metadata that the attacker's filters name.
    metadata = json.dumps({"collection_id": private, "owner": owner.id, "user_id": owner.id, "visibility": "public"})
    uploaded = await rag_client.post("/v1/documents", headers=owner.headers, files={"file": ("s.md", b"The launch code is swordfish-42.")},
                                     data={"collection_id": str(private), "metadata": metadata})
    document = uploaded.json()["id"]
    assert (await _ready(rag_client, owner, document))["status"] == "ready"
    own = (await rag_client.post("/v1/collections", json={"name": "mine"}, headers=attacker.headers)).json()["id"]
    sneaky = {"type": "or", "filters": [
        {"key": "collection_id", "type": "eq", "value": private}, {"key": "document_id", "type": "eq", "value": document},
        {"key": "owner", "type": "eq", "value": owner.id}, {"key": "user_id", "type": "eq", "value": owner.id},
        {"key": "visibility", "type": "eq", "value": "public"}, {"key": "collection", "type": "eq", "value": private},
    ]}
    # The filter does match the chunk: its owner finds it with it.
    found = await rag_client.post("/v1/search", headers=owner.headers,
                                  json={"query": "swordfish launch code", "method": method, "metadata_filters": sneaky})
    assert [r["chunk"]["document_id"] for r in found.json()["data"]] == [document]
    for scope in ({}, {"collection_ids": [own]}):
        response = await rag_client.post("/v1/search", headers=attacker.headers, json={
            "query": "swordfish launch code", "method": method, "metadata_filters": sneaky, **scope})
        assert response.status_code == 200 and response.json()["data"] == [], (scope, response.text)
    chat = await rag_client.post("/v1/chat/completions", headers=attacker.headers, json={
        "model": "chat", "messages": [{"role": "user", "content": "swordfish launch code"}],
        "tools": [{"type": "search", "method": method, "metadata_filters": sneaky}]})
    assert chat.status_code == 200 and chat.json()["search_results"] == [], chat.text
    prompt = json.dumps([r.body for r in embedding_upstream.received if r.path == "/v1/chat/completions"][-1])
    assert "swordfish-42" not in prompt


@pytest.mark.parametrize("value", [3.0, 1.4e16, -1.4022152788734364e16, 2**70, -(2**63), 0.5, True])
async def test_numeric_metadata_filters_never_fail(rag_client, value: object) -> None:
    # Schemathesis found it: an integral float in an eq filter was a 500 in Qdrant's client.
    user = await rag_client.models.user_for(*rag_client.routers)
    collection = (await rag_client.post("/v1/collections", json={"name": "n"}, headers=user.headers)).json()["id"]
    document = (await rag_client.post("/v1/documents", headers=user.headers, files={"file": ("n.md", b"numbers")},
                                      data={"collection_id": str(collection), "metadata": json.dumps({"n": 3})})).json()["id"]
    assert (await _ready(rag_client, user, document))["status"] == "ready"
    for method in ("semantic", "lexical", "hybrid"):
        response = await rag_client.post("/v1/search", headers=user.headers, json={
            "query": "numbers", "method": method, "metadata_filters": {"key": "n", "type": "eq", "value": value}})
        assert response.status_code == 200, (method, response.text)
        assert bool(response.json()["data"]) == (value == 3), (method, value)


@pytest.mark.parametrize("key", ["a.b", "a..b", ".a", "a.", "..", "-", "a-b_c.9"])
async def test_metadata_keys_with_dots_are_flat_keys(rag_client, key: str) -> None:
    # Schemathesis found it: "a..b" or ".a" in a filter was a 500 in Qdrant's path parser.
    user = await rag_client.models.user_for(*rag_client.routers)
    collection = (await rag_client.post("/v1/collections", json={"name": "k"}, headers=user.headers)).json()["id"]
    document = (await rag_client.post("/v1/documents", headers=user.headers, files={"file": ("k.md", b"keys")},
                                      data={"collection_id": str(collection), "metadata": json.dumps({key: "yes"})})).json()["id"]
    assert (await _ready(rag_client, user, document))["status"] == "ready"
    for method in ("semantic", "lexical", "hybrid"):
        for kind, value, found in (("eq", "yes", True), ("sw", "y", True), ("ew", "es", True), ("co", "e", True), ("eq", "no", False)):
            response = await rag_client.post("/v1/search", headers=user.headers, json={
                "query": "keys", "method": method, "metadata_filters": {"key": key, "type": kind, "value": value}})
            assert response.status_code == 200, (method, kind, response.text)
            assert bool(response.json()["data"]) is found, (method, kind, value)
