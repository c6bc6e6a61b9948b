"""Admin CRUD of organizations."""

from conftest import ADMIN, Seeder


async def test_create_get_list_update_delete(client, seed: Seeder) -> None:
    created = await client.post("/v1/admin/organizations", json={"name": "Acme"}, headers=ADMIN)
    assert created.status_code == 201
    org_id = created.json()["id"]

    got = (await client.get(f"/v1/admin/organizations/{org_id}", headers=ADMIN)).json()
    assert got["object"] == "organization" and got["name"] == "Acme" and got["users"] == 0
    assert isinstance(got["created"], int) and got["created"] > 1_700_000_000

    patched = await client.patch(f"/v1/admin/organizations/{org_id}", json={"name": "Acme Corp"}, headers=ADMIN)
    assert patched.status_code == 204
    assert (await client.get(f"/v1/admin/organizations/{org_id}", headers=ADMIN)).json()["name"] == "Acme Corp"

    listed = (await client.get("/v1/admin/organizations", headers=ADMIN)).json()
    assert listed["object"] == "list" and listed["total"] == 1 and listed["data"][0]["id"] == org_id

    assert (await client.delete(f"/v1/admin/organizations/{org_id}", headers=ADMIN)).status_code == 204
    assert (await client.get(f"/v1/admin/organizations/{org_id}", headers=ADMIN)).status_code == 404


async def test_list_paginates_orders_and_counts(client) -> None:
    for name in ["charlie", "alpha", "bravo"]:
        assert (await client.post("/v1/admin/organizations", json={"name": name}, headers=ADMIN)).status_code == 201
    page = (await client.get("/v1/admin/organizations?order_by=name&order_direction=desc&limit=2", headers=ADMIN)).json()
    assert [o["name"] for o in page["data"]] == ["charlie", "bravo"] and page["total"] == 3
    page = (await client.get("/v1/admin/organizations?order_by=name&offset=2&limit=2", headers=ADMIN)).json()
    assert [o["name"] for o in page["data"]] == ["charlie"] and page["total"] == 3


async def test_list_rejects_bad_paging(client) -> None:
    for query in ["limit=0", "limit=101", "offset=-1", "order_by=password", "order_direction=up", "limit=abc"]:
        response = await client.get(f"/v1/admin/organizations?{query}", headers=ADMIN)
        assert response.status_code == 422, query


async def test_duplicate_name_is_409(client) -> None:
    assert (await client.post("/v1/admin/organizations", json={"name": "Dup"}, headers=ADMIN)).status_code == 201
    response = await client.post("/v1/admin/organizations", json={"name": "Dup"}, headers=ADMIN)
    assert response.status_code == 409 and "already exists" in response.json()["detail"]
    other = (await client.post("/v1/admin/organizations", json={"name": "Other"}, headers=ADMIN)).json()["id"]
    response = await client.patch(f"/v1/admin/organizations/{other}", json={"name": "Dup"}, headers=ADMIN)
    assert response.status_code == 409


async def test_delete_in_use_is_409_and_counts_users(client, seed: Seeder) -> None:
    org_id = await seed.organization()
    await seed.user(organization=org_id)
    assert (await client.get(f"/v1/admin/organizations/{org_id}", headers=ADMIN)).json()["users"] == 1
    response = await client.delete(f"/v1/admin/organizations/{org_id}", headers=ADMIN)
    assert response.status_code == 409 and "still has 1 user" in response.json()["detail"]
    assert (await client.get(f"/v1/admin/organizations/{org_id}", headers=ADMIN)).status_code == 200


async def test_unknown_ids_are_404(client) -> None:
    for method in ("get", "delete"):
        response = await getattr(client, method)("/v1/admin/organizations/999999", headers=ADMIN)
        assert response.status_code == 404 and response.json()["detail"] == "Organization 999999 not found"
    response = await client.patch("/v1/admin/organizations/999999", json={"name": "x"}, headers=ADMIN)
    assert response.status_code == 404
