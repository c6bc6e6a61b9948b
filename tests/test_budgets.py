"""Budgets: reserved before the call, settled to the real cost, never overspent, with a ledger."""

import asyncio

import openai
import pytest
from sqlalchemy import select

from api.db.tables import User
from conftest import ADMIN, Models, Seeder, usage_rows
from test_gateway_chat import sdk

BODY = {"model": "chat", "messages": [{"role": "user", "content": "one two three"}], "max_tokens": 5}
# Router prices: 1 per million prompt and completion tokens. A call reserves the prompt estimate
# (3 tokens × 1.25 + 16 = 19) plus max_tokens (5): 24 micro-units; it really costs 3 + 5 = 8.
RESERVED, SPENT = 24_000, 8_000  # nanos


async def budgeted(client, models: Models, upstream, budget: float):
    router = await models.router(cost_prompt_tokens=1, cost_completion_tokens=1)
    await models.provider(router, upstream.base_url)
    return await models.user_for(router, budget=budget)


async def db_budget(client, user_id: int) -> int:
    await usage_rows(client)  # flush: the budget moves with the usage records
    async with client.app.state.context.session_factory() as session:
        return (await session.execute(select(User.budget_nanos).where(User.id == user_id))).scalar_one()


async def test_a_call_is_charged_its_real_cost(client, models: Models, upstream) -> None:
    user = await budgeted(client, models, upstream, budget=1)
    response = await client.post("/v1/chat/completions", json=BODY, headers=user.headers)
    assert response.status_code == 200 and response.json()["usage"]["cost"] == pytest.approx(SPENT / 1e9)
    assert await db_budget(client, user.id) == 1_000_000_000 - SPENT
    info = (await client.get("/v1/me/info", headers=user.headers)).json()
    assert info["budget"] == pytest.approx((1_000_000_000 - SPENT) / 1e9)


@pytest.mark.parametrize("budget", [9_007_199.254740993, 10**9], ids=["past-2^53-nanos", "largest-accepted"])
async def test_the_largest_budgets_are_charged_to_the_nano(client, models: Models, upstream, budget) -> None:
    """Kept to the nano where a double would lose digits (past 2^53 nanos), and past 10^17 nanos,
    which Redis's Lua once wrote as 1e+17: the next admission then failed with a 500."""
    user = await budgeted(client, models, upstream, budget=budget)
    response = await client.post("/v1/chat/completions", json=BODY, headers=user.headers)
    assert response.status_code == 200
    start = 9_007_199_254_740_993 if budget != 10**9 else 10**18
    assert await db_budget(client, user.id) == start - SPENT
    second = await client.post("/v1/chat/completions", json=BODY, headers=user.headers)
    assert second.status_code == 200 and await db_budget(client, user.id) == start - 2 * SPENT
    # Set again by an administrator, with the balance already loaded in Redis.
    patched = await client.patch(f"/v1/admin/users/{user.id}", json={"budget": budget}, headers=ADMIN)
    assert patched.status_code == 204
    third = await client.post("/v1/chat/completions", json=BODY, headers=user.headers)
    assert third.status_code == 200 and await db_budget(client, user.id) == start - SPENT


async def test_concurrent_calls_cannot_overspend(client, models: Models, upstream) -> None:
    # Room for exactly 10 reservations of 24 µ-units: 240 µ-units + a little.
    user = await budgeted(client, models, upstream, budget=0.000245)
    upstream.behaviour.delay_seconds = 2  # the first admitted are still in flight when the last arrive
    responses = await asyncio.gather(*(client.post("/v1/chat/completions", json=BODY, headers=user.headers) for _ in range(100)))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 10 and statuses.count(402) == 90
    assert next(r for r in responses if r.status_code == 402).json() == {"detail": "Insufficient budget: your budget cannot cover this call"}
    assert len(await usage_rows(client)) == 100  # refused calls are recorded too
    remaining = await db_budget(client, user.id)
    assert remaining == 245_000 - 10 * SPENT >= 0
    # Once the reservations are settled, what is left is usable again.
    upstream.behaviour.delay_seconds = 0
    assert (await client.post("/v1/chat/completions", json=BODY, headers=user.headers)).status_code == 200


async def test_the_sdk_sees_402(client, models: Models, upstream) -> None:
    user = await budgeted(client, models, upstream, budget=0)
    with pytest.raises(openai.APIStatusError) as error:
        await sdk(client, user.key).chat.completions.create(**BODY)
    assert error.value.status_code == 402 and upstream.received == []


async def test_budgeted_calls_without_max_tokens_get_the_default_bound(app_factory, upstream) -> None:
    client = await app_factory(gateway={"default_max_tokens": 50})
    user = await budgeted(client, Models(client, Seeder(client)), upstream, budget=1)
    body = {k: v for k, v in BODY.items() if k != "max_tokens"}
    assert (await client.post("/v1/chat/completions", json=body, headers=user.headers)).status_code == 200
    assert upstream.received[-1].body["max_tokens"] == 50


async def test_a_stream_settles_when_it_ends(client, models: Models, upstream) -> None:
    user = await budgeted(client, models, upstream, budget=1)
    response = await client.post("/v1/chat/completions", json={**BODY, "stream": True}, headers=user.headers)
    assert response.status_code == 200 and "[DONE]" in response.text
    assert await client.app.state.context.budgets.balance(str(user.id)) == 1_000_000_000 - SPENT


async def test_budgets_hold_across_two_replicas(app_factory, backend, upstream) -> None:
    if backend.redis_url is None:
        pytest.skip("embedded mode runs one process; replicas need Redis")
    first, second = await app_factory(), await app_factory()
    user = await budgeted(first, Models(first, Seeder(first)), upstream, budget=0.000245)
    await second.app.state.context.catalog.reload()
    upstream.behaviour.delay_seconds = 2
    calls = [replica.post("/v1/chat/completions", json=BODY, headers=user.headers) for replica in (first, second) * 20]
    statuses = [r.status_code for r in await asyncio.gather(*calls)]
    assert statuses.count(200) == 10 and statuses.count(402) == 30
    await second.app.state.context.usage_writer.flush()
    assert await db_budget(first, user.id) == 245_000 - 10 * SPENT


async def test_recharge_and_ledger(client, models: Models, upstream) -> None:
    user = await budgeted(client, models, upstream, budget=0)
    assert (await client.post("/v1/chat/completions", json=BODY, headers=user.headers)).status_code == 402
    recharge = await client.post(f"/v1/admin/users/{user.id}/budget", json={"amount": 0.5, "reason": "Q4 top-up"}, headers=ADMIN)
    assert recharge.status_code == 201
    assert (await client.post("/v1/chat/completions", json=BODY, headers=user.headers)).status_code == 200
    assert (await client.patch(f"/v1/admin/users/{user.id}", json={"budget": 2}, headers=ADMIN)).status_code == 204
    history = (await client.get(f"/v1/admin/users/{user.id}/budget", headers=ADMIN)).json()
    assert history["total"] == 2
    latest, first = history["data"]
    assert (latest["kind"], latest["budget"], latest["actor"]) == ("set", 2.0, None)
    assert (first["kind"], first["amount"], first["budget"], first["reason"]) == ("recharge", 0.5, 0.5, "Q4 top-up")
    info = (await client.get("/v1/me/info", headers=user.headers)).json()
    assert info["budget"] == pytest.approx(2.0)
    unlimited = await models.user_for(1)
    refused = await client.post(f"/v1/admin/users/{unlimited.id}/budget", json={"amount": 1}, headers=ADMIN)
    assert refused.status_code == 400
    assert (await client.post(f"/v1/admin/users/{user.id}/budget", json={"amount": "lots"}, headers=ADMIN)).status_code == 422
    assert (await client.post("/v1/admin/users/999999/budget", json={"amount": 1}, headers=ADMIN)).status_code == 404


async def test_a_retried_budget_change_with_an_idempotency_key_is_applied_once(client, models: Models, upstream) -> None:
    user = await budgeted(client, models, upstream, budget=1)
    path = f"/v1/admin/users/{user.id}/budget"
    first = await client.post(path, json={"amount": 0.5}, headers={**ADMIN, "Idempotency-Key": "top-up-1"})
    again = await client.post(path, json={"amount": 0.5}, headers={**ADMIN, "Idempotency-Key": "top-up-1"})
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    other = await client.post(path, json={"amount": 0.7}, headers={**ADMIN, "Idempotency-Key": "top-up-1"})
    assert other.status_code == 409 and "different request" in other.json()["detail"]
    elsewhere = await client.post(f"/v1/admin/users/{user.id + 1000}/budget", json={"amount": 0.5},
                                  headers={**ADMIN, "Idempotency-Key": "top-up-1"})
    assert elsewhere.status_code == 409  # the same key for another user's budget is another request
    patch = {"budget": 3}
    for _ in range(2):
        assert (await client.patch(f"/v1/admin/users/{user.id}", json=patch,
                                   headers={**ADMIN, "Idempotency-Key": "set-3"})).status_code == 204
    # A new key is a new change, even with the same body.
    assert (await client.post(path, json={"amount": 0.5}, headers={**ADMIN, "Idempotency-Key": "top-up-2"})).status_code == 201
    history = (await client.get(path, headers=ADMIN)).json()
    assert [(c["kind"], c["budget"]) for c in reversed(history["data"])] == [("recharge", 1.5), ("set", 3.0), ("recharge", 3.5)]
    assert (await client.get("/v1/me/info", headers=user.headers)).json()["budget"] == pytest.approx(3.5)
    assert await db_budget(client, user.id) == 3_500_000_000
    too_long = await client.post(path, json={"amount": 0.5}, headers={**ADMIN, "Idempotency-Key": "k" * 256})
    assert too_long.status_code == 400 and "Idempotency-Key" in too_long.json()["detail"]


async def test_a_budget_set_after_a_call_ended_is_not_charged_for_it(client, models: Models, upstream, monkeypatch) -> None:
    """A call's settlement may wait for the next admission (a few ms in Redis mode, here held
    for seconds): setting a budget first settles the calls that have ended, so the new budget
    starts whole instead of paying for a call made before it."""
    from api.quota import store as quotas

    monkeypatch.setattr(quotas, "SETTLE_LINGER_SECONDS", 30.0)
    user = await budgeted(client, models, upstream, budget=1)
    assert (await client.post("/v1/chat/completions", json=BODY, headers=user.headers)).status_code == 200
    assert (await client.patch(f"/v1/admin/users/{user.id}", json={"budget": 2}, headers=ADMIN)).status_code == 204
    info = (await client.get("/v1/me/info", headers=user.headers)).json()
    assert info["budget"] == 2.0


async def test_admin_totals_show_the_remaining_budget(client, models: Models, upstream) -> None:
    user = await budgeted(client, models, upstream, budget=1)
    assert (await client.post("/v1/chat/completions", json=BODY, headers=user.headers)).status_code == 200
    await usage_rows(client)
    rows = (await client.get(f"/v1/admin/usage?group_by=user&id={user.id}", headers=ADMIN)).json()["data"]
    assert [(r["requests"], r["budget"]) for r in rows] == [(1, pytest.approx(1 - SPENT / 1e9))]


async def test_a_call_in_flight_when_redis_loses_the_budget_keys_gives_back_nothing_it_no_longer_holds(
    client, models: Models, upstream, backend
) -> None:
    """Redis loses a user's budget keys (a flush, a restart without persistence) while a call
    is in flight; the next call reloads the balance from the database, which never had the
    first call's hold taken. Settling, the first call is charged its cost and gives back
    nothing: the balance ends at the budget minus what was spent, `reserved` at zero."""
    if backend.redis_url is None:
        pytest.skip("the in-process store loses no keys")
    user = await budgeted(client, models, upstream, budget=1)
    upstream.behaviour.delay_seconds = 1.0
    first = asyncio.create_task(client.post("/v1/chat/completions", json=BODY, headers=user.headers))
    while not upstream.received:  # admitted: its hold is taken
        await asyncio.sleep(0.01)
    context = client.app.state.context
    prefix = context.settings.dependencies.redis.key_prefix
    redis = context.redis
    # Only this test's keys (its own prefix): other tests and processes share this Redis.
    lost = [key async for key in redis.scan_iter(match=f"{prefix}budget:{user.id}:*")]
    assert lost and await redis.delete(*lost) == len(lost)
    second = asyncio.create_task(client.post("/v1/chat/completions", json=BODY, headers=user.headers))
    assert [(await call).status_code for call in (first, second)] == [200, 200]

    assert await db_budget(client, user.id) == 1_000_000_000 - 2 * SPENT
    info = (await client.get("/v1/me/info", headers=user.headers)).json()
    assert round(info["budget"] * 1e9) == 1_000_000_000 - 2 * SPENT  # was 1_000_000_000 − 2 × SPENT + RESERVED
    assert int(await redis.get(f"{prefix}budget:{user.id}:reserved")) == 0  # was −RESERVED
    # And a budget set again is exact: nothing is reserved to add back.
    assert (await client.patch(f"/v1/admin/users/{user.id}", json={"budget": 1}, headers=ADMIN)).status_code == 204
    assert await context.budgets.balance(str(user.id)) == 1_000_000_000


async def test_a_balance_redis_lost_is_loaded_from_the_budget_now_not_from_the_copy_cached_with_the_key(
    client, models: Models, upstream, backend
) -> None:
    """A key stays cached while nothing changes it, with the user's budget as it was then; the
    calls made since lowered the budget in the database. When Redis has lost the balance, it
    is loaded from the database's budget: from the cached copy, the calls since would be
    spent again."""
    if backend.redis_url is None:
        pytest.skip("the in-process store loses no keys")
    user = await budgeted(client, models, upstream, budget=1)
    assert (await client.post("/v1/chat/completions", json=BODY, headers=user.headers)).status_code == 200
    assert await db_budget(client, user.id) == 1_000_000_000 - SPENT
    await asyncio.sleep(1.3)  # the key's entry is still used, its copy of the budget is not
    context = client.app.state.context
    prefix = context.settings.dependencies.redis.key_prefix
    lost = [key async for key in context.redis.scan_iter(match=f"{prefix}budget:{user.id}:*")]
    assert lost and await context.redis.delete(*lost) == len(lost)
    assert (await client.post("/v1/chat/completions", json=BODY, headers=user.headers)).status_code == 200
    assert await db_budget(client, user.id) == 1_000_000_000 - 2 * SPENT
    assert await context.budgets.balance(str(user.id)) == 1_000_000_000 - 2 * SPENT  # settled first
