"""OpenGateLLM's names and shapes, accepted beside Tollgate's own (docs/api.md, "Compatibility"):
`router_id` on providers, `sort_by`/`sort_order` on the router list, `current_password` on the
admin user update, the legacy `/v1/chunks/{document}` routes, and unknown fields ignored in the
bodies whose reference schema allows additional properties."""

from __future__ import annotations

import pytest

from conftest import ADMIN, Models, Seeder, bearer, fake_upstream
from fakes.upstream import Behaviour
from ragkit import RAG_SETTINGS, Rag


async def test_providers_take_router_or_router_id_and_answer_both(client, models: Models, upstream, second_upstream) -> None:
    first = await models.router("first")
    second = await models.router("second")
    one, other = {"type": "vllm", "url": upstream.base_url}, {"type": "vllm", "url": second_upstream.base_url}
    by_new_name = await client.post("/v1/admin/providers", json={**one, "router_id": first, "model_name": "fake-embed"},
                                    headers=ADMIN)
    assert by_new_name.status_code == 201, by_new_name.text
    provider = by_new_name.json()["id"]
    shown = (await client.get(f"/v1/admin/providers/{provider}", headers=ADMIN)).json()
    assert shown["router_id"] == first and shown["router"] == first
    # The creation answers the whole provider, as the reference does (its id where {"id"} had it).
    assert by_new_name.json() == shown
    by_old_name = await client.post("/v1/admin/providers", json={**one, "router": second, "model_name": "fake-chat"}, headers=ADMIN)
    assert by_old_name.status_code == 201
    same_twice = await client.post("/v1/admin/providers", json={**other, "router": second, "router_id": second,
                                                                "model_name": "fake-chat"}, headers=ADMIN)
    assert same_twice.status_code == 201
    clash = await client.post("/v1/admin/providers", json={**other, "router": first, "router_id": second,
                                                           "model_name": "fake-embed"}, headers=ADMIN)
    assert clash.status_code == 422 and "router_id" in clash.text
    missing = await client.post("/v1/admin/providers", json={**other, "model_name": "fake-embed"}, headers=ADMIN)
    assert missing.status_code == 422

    moved = await client.patch(f"/v1/admin/providers/{provider}", json={"router_id": second}, headers=ADMIN)
    assert moved.status_code == 204
    assert (await client.get(f"/v1/admin/providers/{provider}", headers=ADMIN)).json()["router_id"] == second
    assert (await client.patch(f"/v1/admin/providers/{provider}", json={"router": first, "router_id": second},
                               headers=ADMIN)).status_code == 422
    assert (await client.get(f"/v1/admin/providers/{provider}", headers=ADMIN)).json()["router_id"] == second

    listed = (await client.get("/v1/admin/providers", params={"router_id": second}, headers=ADMIN)).json()
    assert listed["total"] == 3 and {p["router_id"] for p in listed["data"]} == {second}
    assert (await client.get("/v1/admin/providers", params={"router": first}, headers=ADMIN)).json()["total"] == 0
    both = await client.get("/v1/admin/providers", params={"router": first, "router_id": second}, headers=ADMIN)
    assert both.status_code == 422 and "router_id" in both.text


async def test_the_router_list_takes_sort_by_and_sort_order(client, models: Models) -> None:
    for name in ("bravo", "alpha", "charlie"):
        await models.router(name)
    created = await client.post("/v1/admin/routers", json={"name": "delta", "type": "text-generation", "aliases": ["d"]},
                                headers=ADMIN)
    assert created.status_code == 201 and created.json() == (await client.get(f"/v1/admin/routers/{created.json()['id']}",
                                                                                headers=ADMIN)).json()
    assert created.json()["aliases"] == ["d"] and created.json()["providers"] == 0
    assert (await client.delete(f"/v1/admin/routers/{created.json()['id']}", headers=ADMIN)).status_code == 204

    async def names(**params: object) -> list[str]:
        response = await client.get("/v1/admin/routers", params=params, headers=ADMIN)
        assert response.status_code == 200, response.text
        return [router["name"] for router in response.json()["data"]]

    assert await names() == ["bravo", "alpha", "charlie"]  # by id, ascending
    assert await names(sort_by="name", sort_order="desc") == ["charlie", "bravo", "alpha"]
    assert await names(order_by="name", order_direction="desc") == ["charlie", "bravo", "alpha"]
    assert await names(sort_by="name", order_by="name") == ["alpha", "bravo", "charlie"]
    assert await names(sort_order="desc") == ["charlie", "alpha", "bravo"]
    page = (await client.get("/v1/admin/routers", params={"sort_by": "name", "offset": 1, "limit": 1}, headers=ADMIN)).json()
    assert page["data"][0]["name"] == "bravo" and (page["offset"], page["limit"], page["total"]) == (1, 1, 3)
    for params in ({"sort_by": "name", "order_by": "id"}, {"sort_order": "asc", "order_direction": "desc"},
                   {"sort_by": "size"}, {"sort_order": "up"}):
        response = await client.get("/v1/admin/routers", params=params, headers=ADMIN)
        assert response.status_code == 422, params


async def test_the_admin_user_update_takes_current_password(client, seed: Seeder) -> None:
    user = await seed.user()

    async def login(password: str) -> int:
        return (await client.post("/v1/auth/login", json={"email": user.email, "password": password})).status_code

    wrong = await client.patch(f"/v1/admin/users/{user.id}", json={"current_password": "not the one", "password": "a new password",
                                                                   "name": "renamed"}, headers=ADMIN)
    assert wrong.status_code == 400 and wrong.json()["detail"] == "current_password is incorrect"
    assert "not the one" not in wrong.text
    assert await login(user.password) == 200 and await login("a new password") == 401
    assert (await client.get(f"/v1/admin/users/{user.id}", headers=ADMIN)).json()["name"] is None  # nothing changed

    right = await client.patch(f"/v1/admin/users/{user.id}", json={"current_password": user.password,
                                                                   "password": "a new password"}, headers=ADMIN)
    assert right.status_code == 204
    assert await login("a new password") == 200 and await login(user.password) == 401
    # An administrator needs no current password, as before.
    assert (await client.patch(f"/v1/admin/users/{user.id}", json={"password": "a third password"}, headers=ADMIN)).status_code == 204
    assert await login("a third password") == 200
    assert (await client.patch(f"/v1/admin/users/{user.id}", json={"current_password": "x" * 129}, headers=ADMIN)).status_code == 422


@pytest.fixture
async def rag(app_factory):
    async for upstream in fake_upstream(Behaviour(embedding_dimensions=16)):
        client = await app_factory(**RAG_SETTINGS)
        models = Models(client, Seeder(client))
        router = await models.router("embeddings", type="text-embeddings-inference")
        await models.provider(router, upstream.base_url, model_name="fake-embed")
        yield Rag(client, models, router, upstream)


async def test_the_legacy_chunk_routes_answer_as_the_document_routes(rag: Rag) -> None:
    owner, stranger = await rag.user(), await rag.user()
    collection = await rag.collection(owner)
    document = (await rag.client.post("/v1/documents", data={"collection_id": str(collection), "name": "manual"},
                                      headers=owner.headers)).json()["id"]
    created = await rag.client.post(f"/v1/documents/{document}/chunks", headers=owner.headers,
                                    json={"chunks": [{"content": "alpha"}, {"content": "beta"}, {"content": "gamma"}]})
    assert created.status_code == 201
    legacy = await rag.client.get(f"/v1/chunks/{document}", params={"limit": 2, "offset": 1}, headers=owner.headers)
    current = await rag.client.get(f"/v1/documents/{document}/chunks", params={"limit": 2, "offset": 1}, headers=owner.headers)
    assert legacy.status_code == 200 and legacy.json() == current.json()
    assert [chunk["content"] for chunk in legacy.json()["data"]] == ["beta", "gamma"]
    one = await rag.client.get(f"/v1/chunks/{document}/2", headers=owner.headers)
    assert one.status_code == 200 and one.json() == (await rag.client.get(f"/v1/documents/{document}/chunks/2",
                                                                           headers=owner.headers)).json()
    assert one.json()["object"] == "chunk" and one.json()["content"] == "beta" and one.json()["document_id"] == document
    assert (await rag.client.get(f"/v1/chunks/{document}/9", headers=owner.headers)).status_code == 404
    assert (await rag.client.get(f"/v1/chunks/{document}", headers=stranger.headers)).status_code == 404
    assert (await rag.client.get(f"/v1/chunks/{document}/1", headers=stranger.headers)).status_code == 404
    assert (await rag.client.get(f"/v1/chunks/{document}", params={"limit": 101}, headers=owner.headers)).status_code == 422
    assert (await rag.client.get(f"/v1/chunks/{document}")).status_code == 401
    schema = (await rag.client.get("/openapi.json")).json()
    assert schema["paths"]["/v1/chunks/{document}"]["get"]["deprecated"] is True


async def test_unknown_fields_are_ignored_where_the_reference_allows_them(client, models: Models, seed: Seeder) -> None:
    extra = {"unknown_field": {"nested": [1, 2]}, "note": "a NUL \u0000 in a field nobody reads"}
    organization = await client.post("/v1/admin/organizations", json={"name": "org", **extra}, headers=ADMIN)
    assert organization.status_code == 201, organization.text
    router = await client.post("/v1/admin/routers", json={"name": "chat", "type": "text-generation", **extra}, headers=ADMIN)
    assert router.status_code == 201, router.text
    assert (await client.patch(f"/v1/admin/routers/{router.json()['id']}", json={"aliases": ["house"], **extra},
                               headers=ADMIN)).status_code == 204
    role = await client.post("/v1/admin/roles", json={"name": "reader", **extra}, headers=ADMIN)
    assert role.status_code == 201, role.text
    email = "extra@example.com"
    created = await client.post("/v1/admin/users", json={"email": email, "password": "long enough", "role": role.json()["id"],
                                                         "admin": True, **extra}, headers=ADMIN)
    assert created.status_code == 201, created.text
    login = await client.post("/v1/auth/login", json={"email": email, "password": "long enough", **extra})
    assert login.status_code == 200, login.text
    user_headers = bearer(login.json()["key"])
    assert (await client.patch("/v1/me/info", json={"name": "Ext", **extra}, headers=user_headers)).status_code == 204
    info = (await client.get("/v1/me/info", headers=user_headers)).json()
    assert info["name"] == "Ext" and info["permissions"] == [] and "unknown_field" not in info
    assert (await client.post("/v1/me/keys", json={"name": "k", **extra}, headers=user_headers)).status_code == 201
    assert (await client.post("/v1/collections", json={"name": "c", **extra}, headers=user_headers)).status_code == 201
    # What the reference asks is still checked: the fields it names keep their rules.
    assert (await client.post("/v1/admin/organizations", json={"name": "", **extra}, headers=ADMIN)).status_code == 422
    # Tollgate's own bodies (not in the reference) still refuse a field they do not know.
    user = await seed.user()
    recharge = await client.post(f"/v1/admin/users/{user.id}/budget", json={"amount": 1, "unknown_field": 1}, headers=ADMIN)
    assert recharge.status_code == 422 and "unknown_field" in recharge.text
