"""Admin CRUD of users: references, unique email, budgets, filters."""

import time

from conftest import ADMIN, Seeder


async def test_user_round_trip(client, seed: Seeder) -> None:
    role = await seed.role()
    org = await seed.organization()
    expires = int(time.time()) + 86_400
    body = {"email": " Grace@Example.COM ", "name": "Grace", "password": "hopper-1906", "role": role,
            "organization": org, "budget": 12.345678, "expires": expires, "priority": 3}
    created = await client.post("/v1/admin/users", json=body, headers=ADMIN)
    assert created.status_code == 201
    user = (await client.get(f"/v1/admin/users/{created.json()['id']}", headers=ADMIN)).json()
    assert user == {**user, "object": "user", "email": "grace@example.com", "name": "Grace", "role": role,
                    "organization": org, "budget": 12.345678, "expires": expires, "priority": 3}
    assert "password" not in user and "password_hash" not in user


async def test_patch_changes_present_fields_and_null_clears(client, seed: Seeder) -> None:
    org = await seed.organization()
    user = await seed.user(organization=org, budget=5, expires=int(time.time()) + 3600)
    other_role = await seed.role()
    response = await client.patch(f"/v1/admin/users/{user.id}", json={"role": other_role, "budget": None, "organization": None}, headers=ADMIN)
    assert response.status_code == 204
    got = (await client.get(f"/v1/admin/users/{user.id}", headers=ADMIN)).json()
    assert got["role"] == other_role and got["budget"] is None and got["organization"] is None
    assert got["expires"] is not None and got["email"] == user.email


async def test_admin_can_reset_a_password(client, seed: Seeder) -> None:
    user = await seed.user()
    assert (await client.patch(f"/v1/admin/users/{user.id}", json={"password": "brand new password"}, headers=ADMIN)).status_code == 204
    assert (await client.post("/v1/auth/login", json={"email": user.email, "password": user.password})).status_code == 401
    assert (await client.post("/v1/auth/login", json={"email": user.email, "password": "brand new password"})).status_code == 200


async def test_duplicate_email_is_409_case_insensitively(client, seed: Seeder) -> None:
    user = await seed.user()
    body = {"email": user.email.upper(), "password": "12345678", "role": user.role}
    response = await client.post("/v1/admin/users", json=body, headers=ADMIN)
    assert response.status_code == 409 and "already exists" in response.json()["detail"]
    other = await seed.user()
    assert (await client.patch(f"/v1/admin/users/{other.id}", json={"email": user.email}, headers=ADMIN)).status_code == 409


async def test_unknown_role_or_organization_is_404_and_writes_nothing(client, seed: Seeder) -> None:
    role = await seed.role()
    for body in ({"role": 424242}, {"role": role, "organization": 424242}):
        response = await client.post("/v1/admin/users", json={"email": "x@example.com", "password": "12345678", **body}, headers=ADMIN)
        assert response.status_code == 404
    assert (await client.get("/v1/admin/users", headers=ADMIN)).json()["total"] == 0


async def test_invalid_users_are_422(client, seed: Seeder) -> None:
    role = await seed.role()
    valid = {"email": "v@example.com", "password": "12345678", "role": role}
    for change in ({"email": "not-an-email"}, {"password": "short"}, {"password": "x" * 129}, {"role": "one"},
                   {"budget": -1}, {"budget": 1.1234567891}, {"budget": 10**9 + 1}, {"expires": -5}, {"priority": -1}, {"role": 0},
                   {"role": 2**40}, {"email": "a@" + "b" * 300}):
        response = await client.post("/v1/admin/users", json={**valid, **change}, headers=ADMIN)
        assert response.status_code == 422, change
    user = await seed.user()
    for change in ({"email": None}, {"password": None}, {"role": None}, {"priority": None}):
        response = await client.patch(f"/v1/admin/users/{user.id}", json=change, headers=ADMIN)
        assert response.status_code == 422, change


async def test_rejected_password_is_not_echoed(client, seed: Seeder) -> None:
    role = await seed.role()
    response = await client.post("/v1/admin/users", json={"email": "e@example.com", "password": "secret!", "role": role}, headers=ADMIN)
    assert response.status_code == 422 and "secret!" not in response.text


async def test_filters(client, seed: Seeder) -> None:
    org = await seed.organization()
    in_org = await seed.user(organization=org)
    other = await seed.user()
    by_org = (await client.get(f"/v1/admin/users?organization={org}", headers=ADMIN)).json()
    assert [u["id"] for u in by_org["data"]] == [in_org.id] and by_org["total"] == 1
    by_role = (await client.get(f"/v1/admin/users?role={other.role}", headers=ADMIN)).json()
    assert [u["id"] for u in by_role["data"]] == [other.id]
    by_email = (await client.get(f"/v1/admin/users?email={other.email.upper()}", headers=ADMIN)).json()
    assert [u["id"] for u in by_email["data"]] == [other.id]


async def test_deleting_a_user_deletes_their_keys(client, seed: Seeder) -> None:
    user = await seed.user()
    assert (await client.get("/v1/me/info", headers=user.headers)).status_code == 200
    assert (await client.delete(f"/v1/admin/users/{user.id}", headers=ADMIN)).status_code == 204
    assert (await client.get("/v1/me/info", headers=user.headers)).status_code == 401
    assert (await client.get(f"/v1/admin/tokens?user={user.id}", headers=ADMIN)).json()["total"] == 0
    assert (await client.delete(f"/v1/admin/users/{user.id}", headers=ADMIN)).status_code == 404
