"""Provider health checks: a provider that dies is found and cooled down before users' calls
reach it, and GET /health/models shows what the checks saw."""

from __future__ import annotations

import asyncio
import time

from conftest import Models, Seeder

BODY = {"model": "chat", "messages": [{"role": "user", "content": "hello"}]}


async def wait_for(check, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = await check()
        if body is not None:
            return body
        assert time.monotonic() < deadline, "the health checks never saw it"
        await asyncio.sleep(0.05)


async def test_a_dead_provider_is_found_and_avoided_before_users_hit_it(app_factory, upstream, second_upstream) -> None:
    client = await app_factory(gateway={"health_check_seconds": 0.2, "health_check_timeout_seconds": 1})
    models = Models(client, Seeder(client))
    router = await models.router()
    alive = await models.provider(router, upstream.base_url)
    doomed = await models.provider(router, second_upstream.base_url)
    user = await models.user_for(router)
    reader = await Seeder(client).user(permissions=["read_metric"])

    async def health(predicate) -> dict | None:
        response = await client.get("/health/models", headers=reader.headers)
        assert response.status_code == 200, response.text
        entry = next(r for r in response.json()["data"] if r["id"] == router)
        providers = {p["id"]: p for p in entry["providers"]}
        return entry if predicate(providers) else None

    entry = await wait_for(lambda: health(lambda p: p[alive]["healthy"] and p[doomed]["healthy"]))
    assert entry["healthy_providers"] == 2 and entry["name"] == "chat"

    port = int(second_upstream.base_url.rsplit(":", 1)[1])
    await second_upstream.stop()
    entry = await wait_for(lambda: health(lambda p: p[doomed]["healthy"] is False))
    dead = next(p for p in entry["providers"] if p["id"] == doomed)
    assert dead["cooling"] and "unreachable" in dead["error"] and entry["healthy_providers"] == 1

    # Found by the check, not by users: every call goes to the provider that is alive, first time.
    before = len(upstream.received)
    for _ in range(10):
        assert (await client.post("/v1/chat/completions", json=BODY, headers=user.headers)).status_code == 200
    assert len(upstream.received) - before == 10

    await second_upstream.start(port)
    await wait_for(lambda: health(lambda p: p[doomed]["healthy"] is True))


async def test_models_health_needs_the_read_metric_permission(client, seed: Seeder) -> None:
    assert (await client.get("/health/models")).status_code == 401
    user = await seed.user()
    assert (await client.get("/health/models", headers=user.headers)).status_code == 403
