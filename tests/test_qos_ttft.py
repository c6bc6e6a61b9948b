"""`ttft` as a provider's QoS metric: calls are routed by each provider's observed time to first
token, and one over its `qos_limit` (milliseconds) is passed over while another can take the call."""

from __future__ import annotations

import asyncio

import pytest

from conftest import ADMIN, Models, Seeder
from test_gateway_routing import chat

TTFT = {"qos_metric": "ttft", "qos_limit": 150}


async def _two_providers(models: Models, slow, fast) -> tuple[int, int, int]:
    router = await models.router()
    slow_id = await models.provider(router, slow.base_url, **TTFT)
    fast_id = await models.provider(router, fast.base_url, **TTFT)
    return router, slow_id, fast_id


async def test_a_provider_slower_than_its_ttft_limit_is_passed_over(client, models: Models, upstream, second_upstream) -> None:
    slow, fast = upstream, second_upstream
    router, slow_id, _ = await _two_providers(models, slow, fast)
    shown = (await client.get(f"/v1/admin/providers/{slow_id}", headers=ADMIN)).json()
    assert (shown["qos_metric"], shown["qos_limit"]) == ("ttft", 150)
    user = await models.user_for(router)
    slow.behaviour.delay_seconds = 0.4
    for _ in range(12):
        assert (await chat(client, user)).status_code == 200
    # Shuffled between the two until the slow one is first seen (400 ms > 150 ms): then never again.
    assert len(slow.received) <= 1 and len(fast.received) == 12 - len(slow.received)


async def test_streams_are_measured_at_their_first_event(client, models: Models, upstream, second_upstream) -> None:
    slow, fast = upstream, second_upstream
    router, _, _ = await _two_providers(models, slow, fast)
    user = await models.user_for(router)
    # Headers at once, then the prompt takes 400 ms: the time to first token, not to first header.
    slow.behaviour.first_event_delay_seconds = 0.4
    for _ in range(10):
        response = await chat(client, user, stream=True)
        assert response.status_code == 200 and "[DONE]" in response.text
    assert len(slow.received) <= 1 and len(fast.received) == 10 - len(slow.received)


async def test_every_provider_over_its_limit_still_answers_the_least_slow_first(
    client, models: Models, upstream, second_upstream
) -> None:
    slower, less_slow = upstream, second_upstream
    router, _, _ = await _two_providers(models, slower, less_slow)
    user = await models.user_for(router)
    slower.behaviour.delay_seconds, less_slow.behaviour.delay_seconds = 0.5, 0.25
    while not (slower.received and less_slow.received):  # until both have a reading
        assert (await chat(client, user)).status_code == 200
    before = len(slower.received)
    for _ in range(4):
        assert (await chat(client, user)).status_code == 200  # over the limit is not a refusal
    assert len(slower.received) == before and len(less_slow.received) >= 4


async def test_a_reading_is_forgotten_so_a_recovered_provider_is_tried_again(app_factory, upstream, second_upstream) -> None:
    client = await app_factory(gateway={"ttft_window_seconds": 2})
    models = Models(client, Seeder(client))
    slow, fast = upstream, second_upstream
    router, _, _ = await _two_providers(models, slow, fast)
    user = await models.user_for(router)
    slow.behaviour.delay_seconds = 0.4
    while not slow.received:
        assert (await chat(client, user)).status_code == 200
    slow.behaviour.delay_seconds = 0  # it recovers, but nothing goes its way to show it...
    for _ in range(4):
        assert (await chat(client, user)).status_code == 200
    assert len(slow.received) == 1
    await asyncio.sleep(2.2)  # ...until its slow reading is forgotten
    for _ in range(20):
        assert (await chat(client, user)).status_code == 200
    assert len(slow.received) >= 4


async def test_a_slow_reading_is_shared_by_every_replica(app_factory, backend, upstream, second_upstream) -> None:
    if backend.redis_url is None:
        pytest.skip("replicas share readings through Redis")
    replica_a = await app_factory()
    models = Models(replica_a, Seeder(replica_a))
    slow, fast = upstream, second_upstream
    router, _, _ = await _two_providers(models, slow, fast)
    user = await models.user_for(router)
    replica_b = await app_factory()  # started after the providers exist: its catalog has them
    slow.behaviour.delay_seconds = 0.4
    while not slow.received:
        assert (await chat(replica_a, user)).status_code == 200
    for _ in range(10):
        assert (await chat(replica_b, user)).status_code == 200
    assert len(slow.received) == 1


async def test_ttft_limits_are_validated(client, models: Models, upstream) -> None:
    router = await models.router()
    for extra in ({"qos_metric": "ttft"}, {"qos_metric": "ttft", "qos_limit": 0}, {"qos_metric": "ttft", "qos_limit": -5}):
        body = {"router": router, "type": "vllm", "url": upstream.base_url, "model_name": "fake-chat", **extra}
        response = await client.post("/v1/admin/providers", json=body, headers=ADMIN)
        assert response.status_code in (400, 422), (extra, response.text)
    provider = await models.provider(router, upstream.base_url)
    assert (await client.patch(f"/v1/admin/providers/{provider}", json=TTFT, headers=ADMIN)).status_code == 204
    assert (await client.get(f"/v1/admin/providers/{provider}", headers=ADMIN)).json()["qos_metric"] == "ttft"
