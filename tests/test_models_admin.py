"""Routers and providers: admin CRUD, provider checks, keys encrypted and masked, config seeding."""

from sqlalchemy import select

from api.db.tables import Provider
from conftest import ADMIN, Models, Seeder, make_settings, running_app, usage_rows


async def test_router_round_trip(client, models: Models) -> None:
    router = await models.router("chat", aliases=["gpt-4o", "house"], load_balancing_strategy="least_busy",
                                 cost_prompt_tokens=0.5, cost_completion_tokens=1.25)
    got = (await client.get(f"/v1/admin/routers/{router}", headers=ADMIN)).json()
    assert got == {**got, "object": "router", "name": "chat", "type": "text-generation", "aliases": ["gpt-4o", "house"],
                   "load_balancing_strategy": "least_busy", "cost_prompt_tokens": 0.5, "cost_completion_tokens": 1.25, "providers": 0}
    assert (await client.patch(f"/v1/admin/routers/{router}", json={"aliases": ["other"], "cost_prompt_tokens": 1}, headers=ADMIN)).status_code == 204
    got = (await client.get(f"/v1/admin/routers/{router}", headers=ADMIN)).json()
    assert got["aliases"] == ["other"] and got["cost_prompt_tokens"] == 1 and got["cost_completion_tokens"] == 1.25
    listed = (await client.get("/v1/admin/routers", headers=ADMIN)).json()
    assert listed["total"] == 1 and listed["data"][0]["id"] == router
    assert (await client.delete(f"/v1/admin/routers/{router}", headers=ADMIN)).status_code == 204
    assert (await client.get(f"/v1/admin/routers/{router}", headers=ADMIN)).status_code == 404


async def test_names_and_aliases_designate_one_router(client, models: Models) -> None:
    await models.router("alpha", aliases=["a1"])
    for body in ({"name": "alpha"}, {"name": "a1"}, {"name": "beta", "aliases": ["alpha"]}, {"name": "beta", "aliases": ["a1"]},
                 {"name": "beta", "aliases": ["beta"]}):
        response = await client.post("/v1/admin/routers", json={"type": "text-generation", **body}, headers=ADMIN)
        assert response.status_code == 409, body
    for body in ({"name": "x", "type": "poetry"}, {"name": "x y", "type": "text-generation"},
                 {"name": "x", "type": "text-generation", "aliases": ["d", "d"]},
                 {"name": "x", "type": "text-generation", "load_balancing_strategy": "round_robin"},
                 {"name": "x", "type": "text-generation", "cost_prompt_tokens": -1}):
        assert (await client.post("/v1/admin/routers", json=body, headers=ADMIN)).status_code == 422, body


async def test_provider_is_checked_learns_metadata_and_hides_its_key(client, models: Models, upstream) -> None:
    upstream.api_key = "sk-upstream-secret-0123456789"
    upstream.behaviour.max_context_length = 32768
    chat = await models.router("chat")
    provider = await models.provider(chat, upstream.base_url + "/v1/", key="sk-upstream-secret-0123456789", timeout=30)
    got = (await client.get(f"/v1/admin/providers/{provider}", headers=ADMIN)).json()
    assert got["key"] == "***6789" and got["url"] == upstream.base_url and got["max_context_length"] == 32768
    assert "sk-upstream-secret" not in (await client.get("/v1/admin/providers", headers=ADMIN)).text
    async with client.app.state.context.session_factory() as session:
        stored = (await session.execute(select(Provider))).scalar_one()
    assert stored.key_encrypted and "sk-upstream-secret" not in stored.key_encrypted

    embed = await models.router("embed", type="text-embeddings-inference")
    embed_provider = await models.provider(embed, upstream.base_url, model_name="fake-embed", key="sk-upstream-secret-0123456789")
    assert (await client.get(f"/v1/admin/providers/{embed_provider}", headers=ADMIN)).json()["vector_size"] == 8
    assert (await client.get(f"/v1/admin/routers/{embed}", headers=ADMIN)).json()["vector_size"] == 8


async def test_unreachable_or_wrong_provider_is_a_clear_400(client, models: Models, upstream) -> None:
    chat = await models.router("chat")
    cases = [
        {"url": "http://127.0.0.1:9", "model_name": "fake-chat"},  # nothing listens there
        {"url": upstream.base_url, "model_name": "not-served"},
    ]
    for case in cases:
        response = await client.post("/v1/admin/providers", json={"router": chat, "type": "vllm", **case}, headers=ADMIN)
        assert response.status_code == 400, case
        assert response.json()["detail"].startswith("Provider check failed")
    upstream.api_key = "right"
    response = await client.post("/v1/admin/providers", json={"router": chat, "type": "openai", "url": upstream.base_url, "model_name": "fake-chat", "key": "wrong"}, headers=ADMIN)
    assert response.status_code == 400 and "401" in response.json()["detail"]
    assert (await client.get("/v1/admin/providers", headers=ADMIN)).json()["total"] == 0
    bad = await client.post("/v1/admin/providers", json={"router": chat, "type": "vllm", "url": "ftp://x", "model_name": "m"}, headers=ADMIN)
    assert bad.status_code == 422
    missing = await client.post("/v1/admin/providers", json={"router": 424242, "type": "vllm", "url": upstream.base_url, "model_name": "fake-chat"}, headers=ADMIN)
    assert missing.status_code == 404


async def test_provider_update_delete_and_duplicates(client, models: Models, upstream) -> None:
    chat = await models.router("chat")
    provider = await models.provider(chat, upstream.base_url)
    duplicate = await client.post("/v1/admin/providers", json={"router": chat, "type": "vllm", "url": upstream.base_url, "model_name": "fake-chat"}, headers=ADMIN)
    assert duplicate.status_code == 409
    patch = {"timeout": 5, "qos_metric": "inflight", "qos_limit": 2, "model_total_params": 70, "key": "sk-new-key-abcdefgh"}
    assert (await client.patch(f"/v1/admin/providers/{provider}", json=patch, headers=ADMIN)).status_code == 204
    got = (await client.get(f"/v1/admin/providers/{provider}", headers=ADMIN)).json()
    assert (got["timeout"], got["qos_metric"], got["qos_limit"], got["model_total_params"], got["key"]) == (5, "inflight", 2, 70, "***efgh")
    assert (await client.patch(f"/v1/admin/providers/{provider}", json={"qos_metric": "latency"}, headers=ADMIN)).status_code == 422
    embed = await models.router("embed", type="text-embeddings-inference")
    moved = await client.patch(f"/v1/admin/providers/{provider}", json={"router": embed}, headers=ADMIN)
    assert moved.status_code == 400
    assert (await client.delete(f"/v1/admin/providers/{provider}", headers=ADMIN)).status_code == 204
    assert (await client.get(f"/v1/admin/providers/{provider}", headers=ADMIN)).status_code == 404


async def test_routes_are_admin_only(client, seed: Seeder) -> None:
    user = await seed.user(permissions=["provide_models", "read_metric"])
    for method, path in (("GET", "/v1/admin/routers"), ("POST", "/v1/admin/routers"), ("GET", "/v1/admin/providers"),
                         ("POST", "/v1/admin/providers"), ("DELETE", "/v1/admin/providers/1"), ("GET", "/v1/admin/usage")):
        assert (await client.request(method, path, headers=user.headers, json={})).status_code == 403, path


async def test_models_section_of_the_config_is_seeded_idempotently(app_factory, backend, upstream) -> None:
    entry = {
        "name": "seeded", "type": "text-generation", "aliases": ["seeded-alias"], "cost_prompt_tokens": 1,
        "providers": [{"type": "vllm", "url": upstream.base_url, "model_name": "fake-chat", "key": "sk-seeded-key-1234"},
                      {"type": "vllm", "url": "http://127.0.0.1:9", "model_name": "fake-chat"}],
    }
    client = await app_factory()  # empties the tables
    from api.settings import Settings

    base = make_settings(backend, "seed-test:")
    settings = Settings(settings=base.settings.model_dump(), dependencies=base.dependencies.model_dump(), models=[entry])
    for _ in range(2):  # two starts: the same router, not two
        async with running_app(settings) as seeded:
            routers = (await seeded.get("/v1/admin/routers", headers=ADMIN)).json()
            assert [(r["name"], r["aliases"], r["providers"]) for r in routers["data"]] == [("seeded", ["seeded-alias"], 2)]
            providers = (await seeded.get("/v1/admin/providers", headers=ADMIN)).json()["data"]
            assert {p["key"] for p in providers} == {"***1234", None}
    user = await Models(client, Seeder(client)).user_for(routers["data"][0]["id"])
    await client.app.state.context.catalog.reload()
    response = await client.post("/v1/chat/completions", json={"model": "seeded-alias", "messages": [{"role": "user", "content": "x"}]}, headers=user.headers)
    assert response.status_code == 200
    assert [r.status for r in await usage_rows(client)] == [200]


async def test_a_router_without_providers_is_a_4xx_naming_the_cause_and_not_listed(client, models: Models, upstream) -> None:
    """Retrying changes nothing until an administrator adds a provider: no 503 "retry shortly"
    and no Retry-After, a 404 that says why; and /v1/models offers only what can answer."""
    empty = await models.router("empty")
    served = await models.router("served")
    await models.provider(served, upstream.base_url)
    user = await models.user_for(empty, served)
    body = {"model": "empty", "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(2):
        response = await client.post("/v1/chat/completions", json=body, headers=user.headers)
        assert response.status_code == 404, response.text
        assert "has no provider" in response.json()["detail"] and "retry-after" not in response.headers
    listed = (await client.get("/v1/models", headers=user.headers)).json()["data"]
    assert [m["id"] for m in listed] == ["served"]
    model = await client.get("/v1/models/empty", headers=user.headers)
    assert model.status_code == 404 and "has no provider" in model.json()["detail"]
    # Recorded like any refused call, with nothing charged.
    rows = await usage_rows(client)
    assert [(r.model, r.status, r.cost_nanos) for r in rows] == [("empty", 404, 0)] * 2
    # Once a provider is added, the same call is served.
    await models.provider(empty, upstream.base_url)
    assert (await client.post("/v1/chat/completions", json=body, headers=user.headers)).status_code == 200
    assert {m["id"] for m in (await client.get("/v1/models", headers=user.headers)).json()["data"]} == {"empty", "served"}
