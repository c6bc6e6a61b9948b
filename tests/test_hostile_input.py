"""Bad input gets a clear 4xx JSON answer, never a 500 and never a half-written record."""

import asyncio

import pytest

from conftest import ADMIN, Seeder


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
    from api.usage.writer import UsageRecord

    writer = client.app.state.context.usage_writer
    common = {"endpoint": "/v1/chat/completions", "method": "POST", "status": 200, "user_id": None,
              "organization_id": None, "key_id": None, "key_name": None}
    await writer.record(UsageRecord(request_id="bad", model="a\u0000b", **common))
    await writer.record(UsageRecord(request_id="good", model="fine", **common))
    await asyncio.wait_for(writer.flush(), timeout=10)
    from conftest import usage_rows

    assert "good" in {r.request_id for r in await usage_rows(client)}
