"""Load balancing, QoS caps with bounded waits and priorities, failover and cooldown."""

import asyncio
import time

import openai
import pytest

from conftest import Models, Seeder, usage_rows
from test_gateway_chat import sdk

MESSAGES = [{"role": "user", "content": "hello there"}]


async def chat(client, user, **extra):
    return await client.post("/v1/chat/completions", json={"model": "chat", "messages": MESSAGES, **extra}, headers=user.headers)


async def test_shuffle_spreads_calls(client, models: Models, upstream, second_upstream) -> None:
    router = await models.router()
    await models.provider(router, upstream.base_url)
    await models.provider(router, second_upstream.base_url)
    user = await models.user_for(router)
    for _ in range(40):
        assert (await chat(client, user)).status_code == 200
    assert len(upstream.received) >= 8 and len(second_upstream.received) >= 8
    assert len(upstream.received) + len(second_upstream.received) == 40


async def test_least_busy_sends_to_the_idle_provider(client, models: Models, upstream, second_upstream) -> None:
    router = await models.router(load_balancing_strategy="least_busy")
    await models.provider(router, upstream.base_url)
    await models.provider(router, second_upstream.base_url)
    user = await models.user_for(router)
    upstream.behaviour.delay_seconds = second_upstream.behaviour.delay_seconds = 1.0
    slow = asyncio.create_task(chat(client, user))
    await asyncio.sleep(0.3)
    busy, idle = (upstream, second_upstream) if upstream.in_flight else (second_upstream, upstream)
    assert busy.in_flight == 1
    idle.behaviour.delay_seconds = 0
    for _ in range(5):
        assert (await chat(client, user)).status_code == 200
    assert len(idle.received) == 5 and len(busy.received) == 1
    assert (await slow).status_code == 200


async def test_qos_cap_waits_then_answers_503_with_retry_after(app_factory, upstream) -> None:
    client = await app_factory(gateway={"qos_wait_seconds": 0.5})
    models = Models(client, Seeder(client))
    router = await models.router()
    await models.provider(router, upstream.base_url, qos_metric="inflight", qos_limit=1)
    user = await models.user_for(router)
    upstream.behaviour.delay_seconds = 2.0
    holder = asyncio.create_task(chat(client, user))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as error:
        await sdk(client, user.key).chat.completions.create(model="chat", messages=MESSAGES)
    waited = time.monotonic() - started
    assert error.value.status_code == 503 and int(error.value.response.headers["retry-after"]) >= 1
    assert 0.4 <= waited < 1.5
    assert upstream.max_in_flight == 1
    assert (await holder).status_code == 200
    assert sorted(r.status for r in await usage_rows(client)) == [200, 503]


async def test_qos_wait_admits_when_a_slot_frees(app_factory, upstream) -> None:
    client = await app_factory(gateway={"qos_wait_seconds": 5})
    models = Models(client, Seeder(client))
    router = await models.router()
    await models.provider(router, upstream.base_url, qos_metric="inflight", qos_limit=1)
    user = await models.user_for(router)
    upstream.behaviour.delay_seconds = 0.3
    results = await asyncio.gather(*(chat(client, user) for _ in range(4)))
    assert [r.status_code for r in results] == [200] * 4
    assert upstream.max_in_flight == 1


async def test_higher_priority_waiters_go_first(app_factory, upstream) -> None:
    client = await app_factory(gateway={"qos_wait_seconds": 10})
    models = Models(client, Seeder(client))
    router = await models.router()
    await models.provider(router, upstream.base_url, qos_metric="inflight", qos_limit=1)
    low = await models.user_for(router, priority=0)
    high = await models.user_for(router, priority=10)
    upstream.behaviour.delay_seconds = 0.4
    finished: list[str] = []

    async def call(user, name):
        assert (await chat(client, user)).status_code == 200
        finished.append(name)

    holder = asyncio.create_task(call(low, "holder"))
    await asyncio.sleep(0.1)
    first_low = asyncio.create_task(call(low, "low"))
    await asyncio.sleep(0.05)
    later_high = asyncio.create_task(call(high, "high"))
    await asyncio.gather(holder, first_low, later_high)
    assert finished == ["holder", "high", "low"]


async def test_failover_survives_a_dead_provider_and_cools_it_down(client, models: Models, upstream, second_upstream) -> None:
    router = await models.router()
    await models.provider(router, upstream.base_url)
    await models.provider(router, second_upstream.base_url)
    user = await models.user_for(router)
    await upstream.stop()  # refused connections from now on
    for _ in range(10):
        assert (await chat(client, user)).status_code == 200
    assert len(second_upstream.received) == 10
    rows = await usage_rows(client)
    assert [r.status for r in rows] == [200] * 10
    # Cooled down after its first failure: far fewer than 10 attempts went its way.
    errors = client.app.state.context.metrics.upstream_errors
    assert sum(s.value for m in errors.collect() for s in m.samples if s.name.endswith("_total")) <= 2


async def test_failover_on_500_and_streaming(client, models: Models, upstream, second_upstream) -> None:
    router = await models.router()
    await models.provider(router, upstream.base_url)
    await models.provider(router, second_upstream.base_url)
    user = await models.user_for(router)
    upstream.behaviour.fail_status = 500
    for _ in range(6):
        assert (await chat(client, user)).status_code == 200
        response = await chat(client, user, stream=True)
        assert response.status_code == 200 and "data: [DONE]" in response.text
    assert sorted(r.status for r in await usage_rows(client)) == [200] * 12


async def test_all_providers_failing_gives_502_and_timeout_504(app_factory, upstream) -> None:
    client = await app_factory(gateway={"cooldown_seconds": 0})
    models = Models(client, Seeder(client))
    router = await models.router()
    await models.provider(router, upstream.base_url, timeout=1)
    user = await models.user_for(router)
    upstream.behaviour.fail_status = 503
    response = await chat(client, user)
    assert response.status_code == 502 and "answered 503" in response.json()["detail"]
    upstream.behaviour.fail_status = None
    upstream.behaviour.malformed = True
    response = await chat(client, user)
    assert response.status_code == 502 and "invalid JSON" in response.json()["detail"]
    upstream.behaviour.malformed = False
    upstream.behaviour.delay_seconds = 1.5
    response = await chat(client, user)
    assert response.status_code == 504 and response.headers["content-type"] == "application/json"
    streamed = await chat(client, user, stream=True)
    assert streamed.status_code == 504
    assert [r.status for r in await usage_rows(client)] == [502, 502, 504, 504]


async def test_a_lone_dead_provider_gives_502(client, models: Models, upstream) -> None:
    router = await models.router()
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router)
    await upstream.stop()
    response = await chat(client, user)
    assert response.status_code == 502 and "unreachable" in response.json()["detail"]
    # Cooling down, it is still tried when it is the only one: a clear 502 again, not a hang.
    assert (await chat(client, user)).status_code == 502


async def test_in_flight_leases_expire_when_a_process_dies(backend) -> None:
    if backend.redis_url is None:
        pytest.skip("in-process counts die with their process: no lease to expire")
    import uuid

    from api.settings import RedisSettings
    from api.state.load import RedisLoadTracker
    from api.state.redis_client import build_redis

    redis = build_redis(RedisSettings(url=backend.redis_url))
    tracker = RedisLoadTracker(redis, f"tollgate-test:{uuid.uuid4().hex}:")
    assert await tracker.acquire(7, cap=1, lease_seconds=0.3) is not None
    assert await tracker.acquire(7, cap=1, lease_seconds=0.3) is None  # at the cap
    # The holder "crashes": it never releases. Its lease runs out and the slot comes back.
    await asyncio.sleep(0.4)
    assert (await tracker.in_flight([7]))[7] == 0
    assert await tracker.acquire(7, cap=1, lease_seconds=0.3) is not None
    await redis.aclose()


async def test_usage_queued_at_shutdown_is_written(backend, upstream, app_factory) -> None:
    from sqlalchemy import func, select

    from api.db.engine import build_engine, build_session_factory
    from api.db.tables import Usage
    from api.settings import DatabaseSettings
    from conftest import make_settings, running_app

    await app_factory()  # empties the tables
    settings = make_settings(backend, "shutdown-test:")
    async with running_app(settings) as client:
        models = Models(client, Seeder(client))
        router = await models.router()
        await models.provider(router, upstream.base_url)
        user = await models.user_for(router)
        client.app.state.context.usage_writer._interval = 30  # nothing would be written for 30 s
        for _ in range(5):
            assert (await chat(client, user)).status_code == 200
    # The app has stopped: everything it answered is in the database.
    engine = build_engine(DatabaseSettings(url=backend.database_url))
    async with build_session_factory(engine)() as session:
        assert (await session.execute(select(func.count(Usage.id)))).scalar_one() == 5
    await engine.dispose()
