"""Who may call what: missing and malformed credentials, admin-only routes, the master key."""

import pytest

from conftest import ADMIN, Seeder, bearer

ADMIN_ROUTES = [
    ("GET", "/v1/admin/organizations"), ("POST", "/v1/admin/organizations"), ("GET", "/v1/admin/organizations/1"),
    ("PATCH", "/v1/admin/organizations/1"), ("DELETE", "/v1/admin/organizations/1"),
    ("GET", "/v1/admin/roles"), ("POST", "/v1/admin/roles"), ("GET", "/v1/admin/roles/1"),
    ("PATCH", "/v1/admin/roles/1"), ("DELETE", "/v1/admin/roles/1"),
    ("GET", "/v1/admin/users"), ("POST", "/v1/admin/users"), ("GET", "/v1/admin/users/1"),
    ("PATCH", "/v1/admin/users/1"), ("DELETE", "/v1/admin/users/1"),
    ("GET", "/v1/admin/tokens"), ("POST", "/v1/admin/tokens"), ("GET", "/v1/admin/tokens/1"), ("DELETE", "/v1/admin/tokens/1"),
]
USER_ROUTES = [("GET", "/v1/me/info"), ("PATCH", "/v1/me/info"), ("GET", "/v1/me/keys"), ("POST", "/v1/me/keys"),
               ("GET", "/v1/me/keys/1"), ("DELETE", "/v1/me/keys/1")]


async def test_health_needs_no_key(client) -> None:
    response = await client.get("/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


@pytest.mark.parametrize("authorization", [None, "", "Bearer", "Bearer ", "Basic abc", "Bearer tg-not-a-real-key", "tg-raw"])
async def test_bad_credentials_are_401_everywhere(client, authorization) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    for method, path in ADMIN_ROUTES + USER_ROUTES:
        response = await client.request(method, path, headers=headers, json={})
        assert response.status_code == 401, (method, path)
        assert response.headers["content-type"] == "application/json" and response.json()["detail"]


async def test_non_admin_users_get_403_on_admin_routes(client, seed: Seeder) -> None:
    user = await seed.user(permissions=["read_metric", "provide_models", "create_public_collection"])
    for method, path in ADMIN_ROUTES:
        response = await client.request(method, path, headers=user.headers, json={})
        assert response.status_code == 403, (method, path)
        assert response.json()["detail"] == "Permission 'admin' is required"


async def test_a_user_with_admin_permission_administers(client, seed: Seeder) -> None:
    admin = await seed.user(permissions=["admin"])
    response = await client.post("/v1/admin/organizations", json={"name": "by-admin-user"}, headers=admin.headers)
    assert response.status_code == 201
    assert (await client.get("/v1/admin/users", headers=admin.headers)).json()["total"] >= 1


async def test_losing_the_admin_permission_takes_effect_at_once(client, seed: Seeder) -> None:
    admin = await seed.user(permissions=["admin"])
    assert (await client.get("/v1/admin/users", headers=admin.headers)).status_code == 200
    assert (await client.patch(f"/v1/admin/roles/{admin.role}", json={"permissions": []}, headers=ADMIN)).status_code == 204
    assert (await client.get("/v1/admin/users", headers=admin.headers)).status_code == 403


async def test_master_key_is_not_stored(client, seed: Seeder) -> None:
    await seed.user()
    from conftest import MASTER_KEY

    async with client.app.state.context.engine.connect() as connection:
        from sqlalchemy import text

        for table in ("users", "api_keys", "roles", "organizations"):
            rows = (await connection.execute(text(f"SELECT * FROM {table}"))).all()
            assert MASTER_KEY not in str(rows)


async def test_key_for_master_is_case_and_whitespace_exact(client) -> None:
    from conftest import MASTER_KEY

    assert (await client.get("/v1/admin/users", headers=bearer(MASTER_KEY.upper()))).status_code == 401
    assert (await client.get("/v1/admin/users", headers=bearer(MASTER_KEY + "x"))).status_code == 401
    assert (await client.get("/v1/admin/users", headers=ADMIN)).status_code == 200
