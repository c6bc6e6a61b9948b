"""Bad input gets a clear 4xx JSON answer, never a 500 and never a half-written record."""

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
