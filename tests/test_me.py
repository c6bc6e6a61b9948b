"""/v1/me/info: a user's own account."""

import asyncio
import time

from conftest import ADMIN, Seeder, bearer


async def test_info_shows_role_permissions_and_limits(client, seed: Seeder) -> None:
    org = await seed.organization()
    role = await seed.role(permissions=["read_metric"], limits=[{"router": 7, "type": "rpm", "value": 5}])
    email = "info@example.com"
    created = await client.post("/v1/admin/users", json={"email": email, "password": "12345678", "role": role, "organization": org, "budget": 2.5, "priority": 4}, headers=ADMIN)
    key = (await client.post("/v1/admin/tokens", json={"name": "k", "user": created.json()["id"]}, headers=ADMIN)).json()["token"]
    info = (await client.get("/v1/me/info", headers=bearer(key))).json()
    assert info == {**info, "object": "userInfo", "id": created.json()["id"], "email": email, "organization": org,
                    "budget": 2.5, "permissions": ["read_metric"], "limits": [{"router": 7, "type": "rpm", "value": 5}],
                    "priority": 4, "expires": None}


async def test_rename_needs_no_password(client, seed: Seeder) -> None:
    user = await seed.user()
    assert (await client.patch("/v1/me/info", json={"name": "New Name"}, headers=user.headers)).status_code == 204
    assert (await client.get("/v1/me/info", headers=user.headers)).json()["name"] == "New Name"


async def test_password_change_needs_the_current_password(client, seed: Seeder) -> None:
    user = await seed.user()
    missing = await client.patch("/v1/me/info", json={"password": "another password"}, headers=user.headers)
    assert missing.status_code == 400 and "current_password" in missing.json()["detail"]
    wrong = await client.patch("/v1/me/info", json={"password": "another password", "current_password": "wrong one"}, headers=user.headers)
    assert wrong.status_code == 400 and "incorrect" in wrong.json()["detail"]
    ok = await client.patch("/v1/me/info", json={"password": "another password", "current_password": user.password}, headers=user.headers)
    assert ok.status_code == 204
    assert (await client.post("/v1/auth/login", json={"email": user.email, "password": user.password})).status_code == 401
    assert (await client.post("/v1/auth/login", json={"email": user.email, "password": "another password"})).status_code == 200


async def test_password_change_revokes_the_playground_key(client, seed: Seeder) -> None:
    user = await seed.user()
    playground = (await client.post("/v1/auth/login", json={"email": user.email, "password": user.password})).json()["key"]
    body = {"password": "another password", "current_password": user.password}
    assert (await client.patch("/v1/me/info", json=body, headers=bearer(playground))).status_code == 204
    assert (await client.get("/v1/me/info", headers=bearer(playground))).status_code == 401
    assert (await client.get("/v1/me/info", headers=user.headers)).status_code == 200


async def test_email_change_needs_password_and_stays_unique(client, seed: Seeder) -> None:
    user, other = await seed.user(), await seed.user()
    assert (await client.patch("/v1/me/info", json={"email": "new@example.com"}, headers=user.headers)).status_code == 400
    taken = await client.patch("/v1/me/info", json={"email": other.email, "current_password": user.password}, headers=user.headers)
    assert taken.status_code == 409
    ok = await client.patch("/v1/me/info", json={"email": "New@Example.com", "current_password": user.password}, headers=user.headers)
    assert ok.status_code == 204
    assert (await client.get("/v1/me/info", headers=user.headers)).json()["email"] == "new@example.com"


async def test_me_refuses_the_master_key_and_ignores_what_a_user_may_not_change(client, seed: Seeder) -> None:
    response = await client.get("/v1/me/info", headers=ADMIN)
    assert response.status_code == 403 and "master key" in response.json()["detail"]
    user = await seed.user(budget=5)
    other_role = await seed.role(permissions=["admin"])
    # OpenGateLLM's schema allows extra fields here: they are ignored, and change nothing.
    assert (await client.patch("/v1/me/info", json={"role": other_role}, headers=user.headers)).status_code == 204
    assert (await client.patch("/v1/me/info", json={"budget": 1e9}, headers=user.headers)).status_code == 204
    info = (await client.get("/v1/me/info", headers=user.headers)).json()
    assert info["role"] == user.role and info["budget"] == 5 and info["permissions"] == []
    assert (await client.get("/v1/admin/users", headers=user.headers)).status_code == 403


async def test_expired_user_is_refused_at_once(client, seed: Seeder) -> None:
    user = await seed.user()
    assert (await client.get("/v1/me/info", headers=user.headers)).status_code == 200  # cached
    assert (await client.patch(f"/v1/admin/users/{user.id}", json={"expires": int(time.time()) - 1}, headers=ADMIN)).status_code == 204
    response = await client.get("/v1/me/info", headers=user.headers)
    assert response.status_code == 401 and "expired" in response.json()["detail"]


async def _delete_user_in_the_database(client, user_id: int) -> None:
    """As a change made straight in the database: no change token, so every process keeps the
    key cached (up to 60 s), which is what a process other than the deleting one does for up
    to `auth_cache_ttl_seconds`."""
    from sqlalchemy import delete

    from api.db.tables import ApiKey, User

    async with client.app.state.context.session_factory() as session:
        await session.execute(delete(ApiKey).where(ApiKey.user_id == user_id))
        await session.execute(delete(User).where(User.id == user_id))
        await session.commit()


async def test_a_deleted_users_key_still_cached_is_a_401_on_me(client, seed: Seeder) -> None:
    user = await seed.user()
    assert (await client.get("/v1/me/info", headers=user.headers)).status_code == 200  # cached
    await _delete_user_in_the_database(client, user.id)
    for method, path, body in (("GET", "/v1/me/info", None), ("PATCH", "/v1/me/info", {"name": "x"}),
                               ("POST", "/v1/me/keys", {"name": "again"}), ("POST", "/v1/collections", {"name": "c"})):
        response = await client.request(method, path, json=body, headers=user.headers)
        assert response.status_code == 401, (method, path, response.text)
        assert response.headers["www-authenticate"] == "Bearer"


async def test_a_user_deleted_through_another_process_is_never_a_404_there(app_factory) -> None:
    """Two processes on one database (two workers of a replica, or two replicas): the user is
    deleted through the first; the second answers 200 (its cached key, within
    `auth_cache_ttl_seconds`) or 401, never 404, and 401 once that time is past."""
    first, second = await app_factory(), await app_factory()
    user = await Seeder(first).user()
    assert (await second.get("/v1/me/info", headers=user.headers)).status_code == 200  # cached there
    assert (await first.delete(f"/v1/admin/users/{user.id}", headers=ADMIN)).status_code == 204
    assert (await first.get("/v1/me/info", headers=user.headers)).status_code == 401  # at once where deleted
    deleted = time.monotonic()
    statuses = set()
    while time.monotonic() - deleted < 1.2:
        statuses.add((await second.get("/v1/me/info", headers=user.headers)).status_code)
        await asyncio.sleep(0.02)
    assert statuses <= {200, 401}, statuses
    assert (await second.get("/v1/me/info", headers=user.headers)).status_code == 401
