"""Admin CRUD of roles, with permissions and per-router limits."""

from conftest import ADMIN, Seeder

LIMITS = [{"router": 1, "type": "rpm", "value": 10}, {"router": 1, "type": "tpm", "value": None}, {"router": 2, "type": "rpd", "value": 0}]


async def test_role_round_trip(client) -> None:
    body = {"name": "analyst", "permissions": ["read_metric", "admin", "read_metric"], "limits": LIMITS}
    created = await client.post("/v1/admin/roles", json=body, headers=ADMIN)
    assert created.status_code == 201
    role_id = created.json()["id"]
    role = (await client.get(f"/v1/admin/roles/{role_id}", headers=ADMIN)).json()
    assert role["object"] == "role" and role["name"] == "analyst" and role["users"] == 0
    assert role["permissions"] == ["admin", "read_metric"]
    assert role["limits"] == LIMITS


async def test_patch_replaces_limits_and_keeps_absent_fields(client) -> None:
    role_id = (await client.post("/v1/admin/roles", json={"name": "r", "permissions": ["admin"], "limits": LIMITS}, headers=ADMIN)).json()["id"]
    new_limits = [{"router": 1, "type": "rpm", "value": 99}]
    assert (await client.patch(f"/v1/admin/roles/{role_id}", json={"limits": new_limits}, headers=ADMIN)).status_code == 204
    role = (await client.get(f"/v1/admin/roles/{role_id}", headers=ADMIN)).json()
    assert role["limits"] == new_limits and role["permissions"] == ["admin"] and role["name"] == "r"
    assert (await client.patch(f"/v1/admin/roles/{role_id}", json={"permissions": []}, headers=ADMIN)).status_code == 204
    assert (await client.get(f"/v1/admin/roles/{role_id}", headers=ADMIN)).json()["permissions"] == []


async def test_invalid_roles_are_422(client) -> None:
    bad_bodies = [
        {"name": "x", "permissions": ["superuser"]},
        {"name": "x", "limits": [{"router": 1, "type": "rph", "value": 1}]},
        {"name": "x", "limits": [{"router": 1, "type": "rpm", "value": -1}]},
        {"name": "x", "limits": [{"router": 1, "type": "rpm", "value": 1}, {"router": 1, "type": "rpm", "value": 2}]},
        {"name": ""},
        {"name": "x" * 256},
        {"permissions": []},
    ]
    for body in bad_bodies:
        response = await client.post("/v1/admin/roles", json=body, headers=ADMIN)
        assert response.status_code == 422, body
        assert isinstance(response.json()["detail"], list)
    assert (await client.get("/v1/admin/roles", headers=ADMIN)).json()["total"] == 0


async def test_duplicate_role_name_is_409(client) -> None:
    assert (await client.post("/v1/admin/roles", json={"name": "same"}, headers=ADMIN)).status_code == 201
    assert (await client.post("/v1/admin/roles", json={"name": "same"}, headers=ADMIN)).status_code == 409


async def test_delete_role_in_use_is_409_then_works_once_free(client, seed: Seeder) -> None:
    user = await seed.user()
    response = await client.delete(f"/v1/admin/roles/{user.role}", headers=ADMIN)
    assert response.status_code == 409 and "still given to 1 user" in response.json()["detail"]
    assert (await client.delete(f"/v1/admin/users/{user.id}", headers=ADMIN)).status_code == 204
    assert (await client.delete(f"/v1/admin/roles/{user.role}", headers=ADMIN)).status_code == 204
    assert (await client.get(f"/v1/admin/roles/{user.role}", headers=ADMIN)).status_code == 404


async def test_role_list_pages(client) -> None:
    for name in ["b", "a", "c"]:
        await client.post("/v1/admin/roles", json={"name": name}, headers=ADMIN)
    page = (await client.get("/v1/admin/roles?order_by=name&limit=2", headers=ADMIN)).json()
    assert [r["name"] for r in page["data"]] == ["a", "b"] and page["total"] == 3
