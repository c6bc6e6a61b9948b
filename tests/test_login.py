"""POST /v1/auth/login: playground keys, uniform failures, throttling."""

import asyncio
import time

import pytest

from conftest import ADMIN, Seeder, bearer


async def test_login_issues_a_working_playground_key_and_rotates_it(client, seed: Seeder) -> None:
    user = await seed.user()
    first = await client.post("/v1/auth/login", json={"email": user.email.upper(), "password": user.password})
    assert first.status_code == 200
    first_key = first.json()["key"]
    assert (await client.get("/v1/me/info", headers=bearer(first_key))).json()["id"] == user.id

    second = (await client.post("/v1/auth/login", json={"email": user.email, "password": user.password})).json()
    assert second["key"] != first_key
    assert (await client.get("/v1/me/info", headers=bearer(first_key))).status_code == 401
    assert (await client.get("/v1/me/info", headers=bearer(second["key"]))).status_code == 200

    keys = (await client.get("/v1/me/keys", headers=user.headers)).json()["data"]
    playground = [k for k in keys if k["name"] == "playground"]
    assert [k["id"] for k in playground] == [second["id"]]
    assert playground[0]["expires"] > time.time() + 6 * 86400
    # The user's other keys survive the rotation.
    assert (await client.get("/v1/me/info", headers=user.headers)).status_code == 200


async def test_wrong_password_and_unknown_email_look_the_same(client, seed: Seeder) -> None:
    user = await seed.user()
    wrong = await client.post("/v1/auth/login", json={"email": user.email, "password": "not the password"})
    unknown = await client.post("/v1/auth/login", json={"email": "nobody@example.com", "password": "not the password"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json() == {"detail": "Invalid email or password"}


async def test_expired_user_cannot_log_in(client, seed: Seeder) -> None:
    user = await seed.user(expires=int(time.time()) - 60)
    response = await client.post("/v1/auth/login", json={"email": user.email, "password": user.password})
    assert response.status_code == 401 and "expired" in response.json()["detail"]


async def test_failed_logins_are_throttled_per_email(client, seed: Seeder) -> None:
    user = await seed.user()
    for _ in range(10):
        response = await client.post("/v1/auth/login", json={"email": user.email, "password": "wrong password"})
        assert response.status_code == 401
    blocked = await client.post("/v1/auth/login", json={"email": user.email, "password": user.password})
    assert blocked.status_code == 429
    assert 1 <= int(blocked.headers["retry-after"]) <= 60
    assert "too many" in blocked.json()["detail"].lower()


async def test_failed_logins_are_throttled_per_client_address(app_factory) -> None:
    client = await app_factory(login={"max_failures": 3, "window_seconds": 60})
    user = await Seeder(client).user()
    for i in range(3):
        response = await client.post("/v1/auth/login", json={"email": f"guess{i}@example.com", "password": "x"})
        assert response.status_code == 401
    # Same address, a real account with the right password: still blocked for this window.
    response = await client.post("/v1/auth/login", json={"email": user.email, "password": user.password})
    assert response.status_code == 429 and "retry-after" in response.headers


async def test_throttle_window_ends(app_factory) -> None:
    client = await app_factory(login={"max_failures": 2, "window_seconds": 1})
    user = await Seeder(client).user()
    for _ in range(2):
        await client.post("/v1/auth/login", json={"email": user.email, "password": "wrong password"})
    assert (await client.post("/v1/auth/login", json={"email": user.email, "password": user.password})).status_code == 429
    await asyncio.sleep(1.1)
    assert (await client.post("/v1/auth/login", json={"email": user.email, "password": user.password})).status_code == 200


async def test_throttle_is_shared_by_replicas(app_factory, backend) -> None:
    if backend.redis_url is None:
        pytest.skip("embedded mode is one process: there is nothing to share")
    replica_a = await app_factory(login={"max_failures": 4, "window_seconds": 60})
    replica_b = await app_factory(login={"max_failures": 4, "window_seconds": 60})
    user = await Seeder(replica_a).user()
    for replica in (replica_a, replica_b, replica_a, replica_b):
        assert (await replica.post("/v1/auth/login", json={"email": user.email, "password": "nope nope"})).status_code == 401
    assert (await replica_b.post("/v1/auth/login", json={"email": user.email, "password": user.password})).status_code == 429


async def test_login_validation(client) -> None:
    for body in ({}, {"email": "a@b.c"}, {"email": "", "password": "x"}, {"email": "a@b.c", "password": "x" * 129}):
        assert (await client.post("/v1/auth/login", json=body)).status_code == 422
    assert (await client.post("/v1/auth/login", content=b"{not json", headers={"content-type": "application/json"})).status_code == 422


async def test_login_needs_no_key_but_admin_routes_do(client) -> None:
    assert (await client.get("/v1/admin/users")).status_code == 401
    assert (await client.get("/v1/admin/users", headers=ADMIN)).status_code == 200
