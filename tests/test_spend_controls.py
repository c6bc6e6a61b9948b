"""Spend controls beyond the user and the role: a key's own budget, rate limits, models, expiry,
name, tags and revocation; an organisation's shared budget and models; periodic allowances.
The tightest applies, and a refusal says which one refused."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import openai
import pytest
from sqlalchemy import select

from api.common import periods
from api.db.tables import ApiKey, Organization
from conftest import ADMIN, Models, Seeder, usage_rows
from test_budgets import BODY, RESERVED, SPENT
from test_gateway_chat import sdk


async def priced(models: Models, upstream, name: str = "chat") -> int:
    router = await models.router(name, cost_prompt_tokens=1, cost_completion_tokens=1)
    await models.provider(router, upstream.base_url)
    return router


async def key_for(client, user, **controls: object) -> tuple[int, dict[str, str]]:
    """A new key of `user`'s own, with `controls`: (id, headers)."""
    created = await client.post("/v1/me/keys", json={"name": "capped", **controls}, headers=user.headers)
    assert created.status_code == 201, created.text
    return created.json()["id"], {"Authorization": f"Bearer {created.json()['token']}"}


async def holder_budget(client, table, holder_id: int) -> int | None:
    await usage_rows(client)  # flush: budgets move with the usage records
    async with client.app.state.context.session_factory() as session:
        return (await session.execute(select(table.budget_nanos).where(table.id == holder_id))).scalar_one()


async def test_a_key_cap_below_the_users_budget_refuses_with_402_naming_the_key(client, models: Models, upstream) -> None:
    router = await priced(models, upstream)
    user = await models.user_for(router, budget=1)
    key_id, headers = await key_for(client, user, name="ci-job", budget=0.00003)  # one call's reservation, not two
    assert (await client.post("/v1/chat/completions", json=BODY, headers=headers)).status_code == 200
    refused = await client.post("/v1/chat/completions", json=BODY, headers=headers)
    assert refused.status_code == 402 and "key 'ci-job'" in refused.json()["detail"]
    with pytest.raises(openai.APIStatusError) as error:
        await sdk(client, headers["Authorization"].split()[1]).chat.completions.create(**BODY)
    assert error.value.status_code == 402
    # The user's other key is not capped; the key and the user were each charged the call once.
    assert (await client.post("/v1/chat/completions", json=BODY, headers=user.headers)).status_code == 200
    assert await holder_budget(client, ApiKey, key_id) == 30_000 - SPENT
    info = (await client.get("/v1/me/info", headers=headers)).json()
    assert info["key"]["budget_remaining"] == pytest.approx((30_000 - SPENT) / 1e9)
    assert info["budget_remaining"] == pytest.approx((1_000_000_000 - 2 * SPENT) / 1e9)


async def test_a_key_limited_to_one_model_gets_404_for_the_others(client, models: Models, upstream) -> None:
    chat, other = await priced(models, upstream, "chat"), await priced(models, upstream, "other")
    user = await models.user_for(chat, other)
    _, headers = await key_for(client, user, models=["chat"])
    assert (await client.post("/v1/chat/completions", json=BODY, headers=headers)).status_code == 200
    refused = await client.post("/v1/chat/completions", json={**BODY, "model": "other"}, headers=headers)
    assert refused.status_code == 404
    with pytest.raises(openai.NotFoundError):
        await sdk(client, headers["Authorization"].split()[1]).chat.completions.create(**{**BODY, "model": "other"})
    assert [m["id"] for m in (await client.get("/v1/models", headers=headers)).json()["data"]] == ["chat"]
    assert len((await client.get("/v1/models", headers=user.headers)).json()["data"]) == 2


async def test_a_keys_rate_limit_applies_on_every_model_together(client, models: Models, upstream) -> None:
    chat, other = await priced(models, upstream, "chat"), await priced(models, upstream, "other")
    user = await models.user_for(chat, other)
    _, headers = await key_for(client, user, limits={"rpm": 2})
    assert (await client.post("/v1/chat/completions", json=BODY, headers=headers)).status_code == 200
    assert (await client.post("/v1/chat/completions", json={**BODY, "model": "other"}, headers=headers)).status_code == 200
    refused = await client.post("/v1/chat/completions", json=BODY, headers=headers)
    assert refused.status_code == 429 and "the key's limit" in refused.json()["detail"]
    with pytest.raises(openai.RateLimitError):
        await sdk(client, headers["Authorization"].split()[1]).chat.completions.create(**BODY)
    assert (await client.post("/v1/chat/completions", json=BODY, headers=user.headers)).status_code == 200


async def test_when_a_roles_window_and_a_keys_are_both_full_the_roles_refuses(client, models: Models, upstream) -> None:
    """The role's windows are checked before the key's: with the role's tpd and the key's rpm
    both full, the refusal (its message and Retry-After) is the role's tpd."""
    router = await priced(models, upstream)
    probe = await models.user_for(router, limits={"tpd": 1_000_000})
    answer = await client.post("/v1/chat/completions", json=BODY, headers=probe.headers)
    reserved = 1_000_000 - int(answer.headers["x-ratelimit-remaining-tokens"])  # prompt estimate + max_tokens
    user = await models.user_for(router, limits={"tpd": reserved})  # room for one call's reservation
    _, headers = await key_for(client, user, limits={"rpm": 1})
    assert (await client.post("/v1/chat/completions", json=BODY, headers=headers)).status_code == 200
    refused = await client.post("/v1/chat/completions", json=BODY, headers=headers)
    assert refused.status_code == 429
    assert "tpd" in refused.json()["detail"] and "your role's limit" in refused.json()["detail"]
    assert int(refused.headers["retry-after"]) > 60  # the day's window, not the key's minute


async def test_a_key_is_renamed_tagged_listed_and_revoked_keeping_its_history(client, models: Models, upstream) -> None:
    router = await priced(models, upstream)
    user = await models.user_for(router)
    key_id, headers = await key_for(client, user)
    assert (await client.post("/v1/chat/completions", json=BODY, headers=headers)).status_code == 200
    patched = await client.patch(f"/v1/admin/tokens/{key_id}", json={"name": "ci", "tags": ["team-a", "ci"]}, headers=ADMIN)
    assert patched.status_code == 204
    tagged = (await client.get("/v1/admin/tokens", params={"tag": "ci"}, headers=ADMIN)).json()
    assert [(t["id"], t["name"], t["tags"]) for t in tagged["data"]] == [(key_id, "ci", ["team-a", "ci"])]
    assert (await client.get("/v1/admin/tokens", params={"tag": "team"}, headers=ADMIN)).json()["data"] == []
    revoked = await client.post(f"/v1/admin/tokens/{key_id}/revoke", json={"reason": "leaked"}, headers=ADMIN)
    assert revoked.status_code == 204
    refused = await client.post("/v1/chat/completions", json=BODY, headers=headers)
    assert refused.status_code == 401 and "revoked: leaked" in refused.json()["detail"]
    listed = (await client.get("/v1/admin/tokens", params={"revoked": "true", "user": user.id}, headers=ADMIN)).json()["data"]
    assert [(t["id"], t["revoked_reason"]) for t in listed] == [(key_id, "leaked")] and listed[0]["revoked"] is not None
    assert any(r.key_id == key_id for r in await usage_rows(client))  # its record stays


async def test_a_key_revoked_through_one_process_is_refused_by_another_within_a_second(app_factory, upstream) -> None:
    first = await app_factory()
    second = await app_factory()
    models = Models(first, Seeder(first))
    router = await priced(models, upstream)
    user = await models.user_for(router)
    key_id, headers = await key_for(first, user)
    assert (await second.get("/v1/me/info", headers=headers)).status_code == 200  # cached there now
    assert (await first.post(f"/v1/me/keys/{key_id}/revoke", json={}, headers=user.headers)).status_code == 204
    assert (await first.post("/v1/chat/completions", json=BODY, headers=headers)).status_code == 401  # at once here
    revoked_at = asyncio.get_running_loop().time()
    while (await second.get("/v1/me/info", headers=headers)).status_code != 401:
        await asyncio.sleep(0.05)
    assert asyncio.get_running_loop().time() - revoked_at < 1.5


async def test_an_organisation_budget_is_shared_by_its_users_and_its_models_restrict_them(
    client, models: Models, upstream
) -> None:
    chat, other = await priced(models, upstream, "chat"), await priced(models, upstream, "other")
    created = await client.post("/v1/admin/organizations", json={"name": "lab", "budget": 0.000039, "models": ["chat"]},
                                headers=ADMIN)
    assert created.status_code == 201, created.text
    organization = created.json()["id"]
    alice = await models.user_for(chat, other, organization=organization, budget=1)
    bob = await models.user_for(chat, other, organization=organization)
    # Room for two calls (a reservation of 24 µ-units each, 8 spent): one each, and then neither.
    assert (await client.post("/v1/chat/completions", json=BODY, headers=alice.headers)).status_code == 200
    assert (await client.post("/v1/chat/completions", json=BODY, headers=bob.headers)).status_code == 200
    refused = await client.post("/v1/chat/completions", json=BODY, headers=bob.headers)
    assert refused.status_code == 402 and "organization 'lab'" in refused.json()["detail"]
    assert (await client.post("/v1/chat/completions", json={**BODY, "model": "other"}, headers=alice.headers)).status_code == 404
    assert await holder_budget(client, Organization, organization) == 39_000 - 2 * SPENT
    recharged = await client.post(f"/v1/admin/organizations/{organization}/budget", json={"amount": 0.001, "reason": "Q1"},
                                  headers=ADMIN)
    assert recharged.status_code == 201
    assert (await client.post("/v1/chat/completions", json=BODY, headers=bob.headers)).status_code == 200
    assert await holder_budget(client, Organization, organization) == 1_039_000 - 3 * SPENT
    ledger = (await client.get(f"/v1/admin/organizations/{organization}/budget", headers=ADMIN)).json()["data"]
    assert [(c["kind"], c["organization"], c["reason"]) for c in ledger] == [("recharge", organization, "Q1")]
    out = (await client.get(f"/v1/admin/organizations/{organization}", headers=ADMIN)).json()
    assert out["models"] == ["chat"] and out["budget_remaining"] == pytest.approx((1_039_000 - 3 * SPENT) / 1e9, abs=1e-12)


async def test_concurrent_calls_never_take_a_key_user_or_organisation_budget_below_zero(
    app_factory, backend, upstream
) -> None:
    if backend.redis_url is None:
        pytest.skip("replicas share their balances through Redis; embedded mode is one process")
    first = await app_factory()
    second = await app_factory()
    models = Models(first, Seeder(first))
    router = await priced(models, upstream)
    organization = (await first.post("/v1/admin/organizations", json={"name": "org", "budget": 0.000245},
                                     headers=ADMIN)).json()["id"]
    users = [await models.user_for(router, organization=organization, budget=0.000125) for _ in range(2)]
    keys = [await key_for(first, user, budget=0.000073) for user in users]  # 3 reservations per key
    await second.app.state.context.catalog.reload()
    upstream.behaviour.delay_seconds = 1
    calls = [replica.post("/v1/chat/completions", json=BODY, headers=headers)
             for replica in (first, second) for _, headers in keys for _ in range(10)]
    statuses = [r.status_code for r in await asyncio.gather(*calls)]
    assert set(statuses) == {200, 402} and statuses.count(200) == 6  # each key: 3 of its 20
    await second.app.state.context.usage_writer.flush()
    for key_id, _ in keys:
        assert await holder_budget(first, ApiKey, key_id) == 73_000 - 3 * SPENT >= 0
    assert await holder_budget(first, Organization, organization) == 245_000 - 6 * SPENT >= 0
    assert RESERVED * 3 <= 73_000 < RESERVED * 4


async def test_a_monthly_allowance_resets_at_the_start_of_the_month(client, models: Models, upstream, monkeypatch) -> None:
    router = await priced(models, upstream)
    user = await models.user_for(router)
    key_id, headers = await key_for(client, user, budget=0.00003, budget_period="month")
    assert (await client.post("/v1/chat/completions", json=BODY, headers=headers)).status_code == 200
    assert (await client.post("/v1/chat/completions", json=BODY, headers=headers)).status_code == 402
    info = (await client.get("/v1/me/info", headers=headers)).json()["key"]
    now = datetime.now(UTC)
    next_month = periods.next_start("month", now)
    assert (info["budget"], info["budget_period"], info["budget_resets_at"]) == (0.00003, "month", int(next_month.timestamp()))
    assert info["budget_remaining"] == pytest.approx((30_000 - SPENT) / 1e9)

    # The clock moves to the next month: nothing ran at midnight, the first call starts the period.
    monkeypatch.setattr(periods, "utc_now", lambda: next_month + timedelta(hours=1))
    assert (await client.post("/v1/chat/completions", json=BODY, headers=headers)).status_code == 200
    assert (await client.post("/v1/chat/completions", json=BODY, headers=headers)).status_code == 402
    ledger = (await client.get(f"/v1/admin/tokens/{key_id}/budget", headers=ADMIN)).json()["data"]
    assert [c["kind"] for c in ledger] == ["reset"]
    info = (await client.get("/v1/me/info", headers=headers)).json()["key"]
    assert info["budget_remaining"] == pytest.approx((30_000 - SPENT) / 1e9)
    assert info["budget_resets_at"] == int(periods.next_start("month", next_month).timestamp())


async def test_budget_controls_are_checked(client, models: Models, upstream) -> None:
    router = await priced(models, upstream)
    user = await models.user_for(router)
    for body in ({"budget_period": "month"}, {"budget": -1}, {"budget_period": "year", "budget": 1},
                 {"limits": {"rpm": 0}}, {"limits": {"rpx": 1}}, {"tags": ["x" * 65]}):
        response = await client.post("/v1/me/keys", json={"name": "k", **body}, headers=user.headers)
        assert 400 <= response.status_code < 500 and response.status_code != 404, (body, response.text)


def test_periods_start_at_midnight_utc_on_the_day_the_monday_and_the_first() -> None:
    moment = datetime(2026, 12, 31, 23, 59, tzinfo=UTC)  # a Thursday
    assert periods.period_start("day", moment) == datetime(2026, 12, 31, tzinfo=UTC)
    assert periods.period_start("week", moment) == datetime(2026, 12, 28, tzinfo=UTC)
    assert periods.period_start("month", moment) == datetime(2026, 12, 1, tzinfo=UTC)
    assert periods.next_start("day", moment) == datetime(2027, 1, 1, tzinfo=UTC)
    assert periods.next_start("week", moment) == datetime(2027, 1, 4, tzinfo=UTC)
    assert periods.next_start("month", moment) == datetime(2027, 1, 1, tzinfo=UTC)
    assert periods.next_start("month", datetime(2027, 1, 31, tzinfo=UTC)) == datetime(2027, 2, 1, tzinfo=UTC)


async def test_a_users_weekly_allowance_set_by_patch_resets_each_monday(client, models: Models, upstream, monkeypatch) -> None:
    router = await priced(models, upstream)
    user = await models.user_for(router, budget=5)
    patched = await client.patch(f"/v1/admin/users/{user.id}", json={"budget": 0.00003, "budget_period": "week"}, headers=ADMIN)
    assert patched.status_code == 204
    assert (await client.post("/v1/chat/completions", json=BODY, headers=user.headers)).status_code == 200
    refused = await client.post("/v1/chat/completions", json=BODY, headers=user.headers)
    assert refused.status_code == 402 and "your budget" in refused.json()["detail"]
    shown = (await client.get(f"/v1/admin/users/{user.id}", headers=ADMIN)).json()
    monday = periods.next_start("week", datetime.now(UTC))
    assert (shown["budget"], shown["budget_period"], shown["budget_resets_at"]) == (0.00003, "week", int(monday.timestamp()))
    monkeypatch.setattr(periods, "utc_now", lambda: monday + timedelta(minutes=5))
    assert (await client.post("/v1/chat/completions", json=BODY, headers=user.headers)).status_code == 200
    ledger = (await client.get(f"/v1/admin/users/{user.id}/budget", headers=ADMIN)).json()["data"]
    assert [c["kind"] for c in ledger] == ["reset", "set"]
    # Back to a one-off budget: the allowance is gone, the amount is what was asked.
    assert (await client.patch(f"/v1/admin/users/{user.id}", json={"budget": 1, "budget_period": None},
                               headers=ADMIN)).status_code == 204
    info = (await client.get("/v1/me/info", headers=user.headers)).json()
    assert (info["budget"], info["budget_period"], info["budget_resets_at"]) == (1.0, None, None)
