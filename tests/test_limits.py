"""Role limits per router and user: exact under concurrency and across replicas."""

import asyncio
import time
import uuid

import openai
import pytest

from api.quota.balances import MemoryBudgetStore
from api.quota.windows import MemoryLimitStore, WindowCheck
from api.quota.store import BudgetHold, BudgetRelease, MemoryQuotaStore, RedisQuotaStore
from conftest import REDIS_URL, Models, Seeder, usage_rows
from test_gateway_chat import sdk

BODY = {"model": "chat", "messages": [{"role": "user", "content": "one two three"}]}
BOUNDED = {**BODY, "max_tokens": 5}  # what a token limit reserves: 3 prompt tokens + 5


async def test_a_limit_of_zero_forbids(client, models: Models, upstream) -> None:
    router = await models.router()
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router, limits={"rpm": 0})
    response = await client.post("/v1/chat/completions", json=BODY, headers=user.headers)
    assert response.status_code == 403 and "may not use model 'chat'" in response.json()["detail"]
    assert upstream.received == []


async def test_a_burst_of_three_times_the_rpm_admits_exactly_the_limit(client, models: Models, upstream) -> None:
    router = await models.router()
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router, limits={"rpm": 5, "rpd": 1000})
    responses = await asyncio.gather(*(client.post("/v1/chat/completions", json=BODY, headers=user.headers) for _ in range(15)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 5 + [429] * 10
    refused = next(r for r in responses if r.status_code == 429)
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-limit-requests"] == "5" and refused.headers["x-ratelimit-remaining-requests"] == "0"
    admitted = next(r for r in responses if r.status_code == 200)
    assert admitted.headers["x-ratelimit-limit-requests"] == "5"
    assert len(upstream.received) == 5
    assert sorted(r.status for r in await usage_rows(client)) == [200] * 5 + [429] * 10
    with pytest.raises(openai.RateLimitError) as error:
        await sdk(client, user.key).chat.completions.create(**BODY)
    assert int(error.value.response.headers["retry-after"]) >= 1


async def test_the_limit_holds_across_two_replicas(app_factory, backend, upstream) -> None:
    if backend.redis_url is None:
        pytest.skip("embedded mode runs one process; replicas need Redis")
    first = await app_factory()
    second = await app_factory()
    models = Models(first, Seeder(first))
    router = await models.router()
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router, limits={"rpm": 6})
    await second.app.state.context.catalog.reload()
    calls = [replica.post("/v1/chat/completions", json=BODY, headers=user.headers) for replica in (first, second) * 9]
    statuses = sorted(r.status_code for r in await asyncio.gather(*calls))
    assert statuses == [200] * 6 + [429] * 12


async def test_tokens_are_reserved_for_prompt_and_completion_bound_and_settled_on_real_usage(
    client, models: Models, upstream
) -> None:
    router = await models.router()
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router, limits={"tpm": 40})
    # Each call: 3 prompt tokens estimated (tiktoken) + max_tokens 10 reserved, 3 + 5 = 8 really used.
    remaining = []
    for _ in range(4):
        response = await client.post("/v1/chat/completions", json={**BODY, "max_tokens": 10}, headers=user.headers)
        assert response.status_code == 200
        remaining.append(int(response.headers["x-ratelimit-remaining-tokens"]))
    # At admission: earlier calls' real totals + this call's reservation; the 5 tokens each
    # call reserved but did not use came back, so the fourth call still fits (24 + 13 ≤ 40).
    assert remaining == [40 - 13, 40 - 8 - 13, 40 - 16 - 13, 40 - 24 - 13]
    refused = await client.post("/v1/chat/completions", json={**BODY, "max_tokens": 10}, headers=user.headers)
    assert refused.status_code == 429 and "tpm 40 tokens" in refused.json()["detail"]
    smaller = await client.post("/v1/chat/completions", json={**BODY, "max_tokens": 5}, headers=user.headers)
    assert smaller.status_code == 200 and int(smaller.headers["x-ratelimit-remaining-tokens"]) == 0


async def test_a_burst_of_short_calls_never_uses_more_tokens_than_the_tpm(app_factory, upstream) -> None:
    """40 calls at once against tpm 100: each reserves its prompt and its completion bound (the
    gateway's default, set as the upstream call's max_tokens, since the calls set none), so
    the window's real total stays within the limit."""
    client = await app_factory(gateway={"default_max_tokens": 5})
    models = Models(client, Seeder(client))
    router = await models.router()
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router, limits={"tpm": 100})
    upstream.behaviour.reply_words = 50  # longer than the default bound: the bound must hold
    responses = await asyncio.gather(*(client.post("/v1/chat/completions", json=BODY, headers=user.headers) for _ in range(40)))
    assert sorted(r.status_code for r in responses) == [200] * 12 + [429] * 28  # 12 × (3 + 5) = 96
    assert all(received.body["max_tokens"] == 5 for received in upstream.received)
    rows = await usage_rows(client)
    assert sum(row.total_tokens for row in rows) == 96
    info = (await client.get("/v1/me/info", headers=user.headers)).json()
    assert [(c["type"], c["used"]) for c in info["limits_usage"]] == [("tpm", 96)]


async def test_a_call_whose_completion_bound_alone_exceeds_the_limit_is_refused(client, models: Models, upstream) -> None:
    router = await models.router()
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router, limits={"tpm": 100, "tpd": 1000})
    for body in ({**BODY, "max_tokens": 101}, {**BODY, "max_completion_tokens": 60, "n": 2}, BODY):  # BODY: the default 4096
        response = await client.post("/v1/chat/completions", json=body, headers=user.headers)
        assert response.status_code == 429, body
        assert "Request too large for model 'chat'" in response.json()["detail"]
        assert "more than your tpm limit of 100 tokens" in response.json()["detail"]
        assert response.headers["x-ratelimit-limit-tokens"] == "100"
    assert upstream.received == []
    # Nothing was counted: the whole window is still there for a call that fits.
    fits = await client.post("/v1/chat/completions", json={**BODY, "max_tokens": 97}, headers=user.headers)
    assert fits.status_code == 200 and int(fits.headers["x-ratelimit-remaining-tokens"]) == 0


async def test_a_call_without_token_limits_or_budget_is_sent_as_asked(client, models: Models, upstream) -> None:
    """The default bound is only set upstream when a token limit or a budget counts on it."""
    router = await models.router()
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router, limits={"rpm": 10})
    assert (await client.post("/v1/chat/completions", json=BODY, headers=user.headers)).status_code == 200
    assert "max_tokens" not in upstream.received[-1].body


async def test_a_failed_call_gives_its_token_reservation_back(app_factory, upstream) -> None:
    client = await app_factory(gateway={"cooldown_seconds": 0})
    models = Models(client, Seeder(client))
    router = await models.router()
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router, limits={"tpm": 100})
    upstream.behaviour.fail_status = 500
    assert (await client.post("/v1/chat/completions", json=BOUNDED, headers=user.headers)).status_code == 502
    upstream.behaviour.fail_status = None
    response = await client.post("/v1/chat/completions", json=BOUNDED, headers=user.headers)
    assert int(response.headers["x-ratelimit-remaining-tokens"]) == 100 - 3 - 5


async def test_a_streamed_call_is_settled_when_it_ends(client, models: Models, upstream) -> None:
    router = await models.router()
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router, limits={"tpm": 100})
    upstream.behaviour.reply_words = 2
    streamed = await client.post("/v1/chat/completions", json={**BOUNDED, "stream": True}, headers=user.headers)
    assert streamed.status_code == 200 and "[DONE]" in streamed.text
    response = await client.post("/v1/chat/completions", json=BOUNDED, headers=user.headers)
    assert int(response.headers["x-ratelimit-remaining-tokens"]) == 100 - (3 + 2) - (3 + 5)


def _redis():
    """A client as the app builds it (no retries, bounded waits)."""
    from api.settings import RedisSettings
    from api.state.redis_client import build_redis

    assert REDIS_URL is not None
    return build_redis(RedisSettings(url=REDIS_URL))


@pytest.fixture(params=["memory"] + (["redis"] if REDIS_URL else []))
async def store(request):
    if request.param == "memory":
        yield MemoryQuotaStore(MemoryLimitStore(), MemoryBudgetStore())
        return
    redis = _redis()
    quota_store = RedisQuotaStore(redis, f"tollgate-test:{uuid.uuid4().hex}:")
    yield quota_store
    await quota_store.close()
    await redis.aclose()


async def test_windows_reset_when_they_end(store) -> None:
    check = [WindowCheck("u:r:rpm", limit=2, window_seconds=1, amount=1)]
    await asyncio.sleep(1 - (time.time() % 1) + 0.05)  # start just after a window begins
    results = [(await store.admit(check)).admitted for _ in range(3)]
    assert results == [True, True, False]
    await asyncio.sleep(1.05)
    assert (await store.admit(check)).admitted


async def test_a_refusal_counts_nothing_in_any_window(store) -> None:
    checks = [WindowCheck("u:r:rpm", limit=10, window_seconds=60, amount=1), WindowCheck("u:r:tpm", limit=5, window_seconds=60, amount=4)]
    assert (await store.admit(checks)).admitted
    refused = await store.admit(checks)  # tpm would reach 8 > 5
    assert not refused.admitted and refused.admission.windows[0].limit == 5
    admitted = await store.admit([checks[0]])
    assert admitted.admission.windows[0].used == 2  # the refused call took no request slot


async def test_a_budget_refusal_counts_nothing_and_a_window_refusal_reserves_nothing(store) -> None:
    rpm = [WindowCheck("u:r:rpm", limit=2, window_seconds=60, amount=1)]
    held = await store.admit(rpm, [BudgetHold(account="1", amount=60, initial_balance=100)])
    assert held.admitted
    short = await store.admit(rpm, [BudgetHold(account="1", amount=60, initial_balance=100)])
    assert short.budget_refused and not short.admitted
    assert (await store.admit(rpm, [BudgetHold(account="1", amount=40, initial_balance=100)])).admitted  # the slot was kept
    over_limit = await store.admit(rpm, [BudgetHold(account="1", amount=0, initial_balance=100)])
    assert not over_limit.admission.admitted and not over_limit.budget_refused
    await store.settle([], [BudgetRelease(account="1", reserved=60, spent=10, epoch=held.epoch(0))])  # 50 back
    assert (await store.admit([], [BudgetHold(account="1", amount=50, initial_balance=100)])).admitted
    assert (await store.admit([], [BudgetHold(account="1", amount=1, initial_balance=100)])).budget_refused


async def test_me_info_shows_where_the_user_stands(client, models: Models, upstream) -> None:
    router = await models.router()
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router, limits={"rpm": 10, "tpd": 1000, "rpd": None})
    for _ in range(3):
        assert (await client.post("/v1/chat/completions", json=BOUNDED, headers=user.headers)).status_code == 200
    info = (await client.get("/v1/me/info", headers=user.headers)).json()
    usage = {(c["router"], c["type"]): (c["limit"], c["used"]) for c in info["limits_usage"]}
    assert usage == {(router, "rpm"): (10, 3), (router, "tpd"): (1000, 3 * 8)}
    assert all(0 < c["reset_in"] <= 86_400 for c in info["limits_usage"])


async def test_concurrent_admissions_each_get_their_own_count(store) -> None:
    """Calls arriving together (batched into one Redis pipeline) are still counted one by one."""
    check = [WindowCheck("u:r:rpm", limit=20, window_seconds=60, amount=1)]
    decisions = await asyncio.gather(*(store.admit(check) for _ in range(50)))
    admitted = [d.admission.windows[0].used for d in decisions if d.admitted]
    assert sorted(admitted) == list(range(1, 21))


async def test_a_caller_gone_during_admission_takes_nothing(store) -> None:
    """A client that disconnects while Redis is counting it (after the script was sent) ends
    up with nothing taken: no window counted, no budget held."""
    if isinstance(store, MemoryQuotaStore):
        pytest.skip("in-process admission has no await to be cancelled in")
    tpm = [WindowCheck("u:r:tpm", limit=100, window_seconds=60, amount=40)]
    admitting = asyncio.ensure_future(store.admit(tpm, [BudgetHold(account="3", amount=70, initial_balance=100)]))
    await asyncio.sleep(0)  # the script is on its way
    admitting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await admitting
    await asyncio.sleep(0.3)  # Redis answered meanwhile; what it took is given back
    full = await store.admit([WindowCheck("u:r:tpm", limit=100, window_seconds=60, amount=100)],
                             [BudgetHold(account="3", amount=100, initial_balance=100)])
    assert full.admitted, full


async def test_concurrent_settlements_add_up(store) -> None:
    """Settlements arriving together (merged into one script call in Redis) each count."""
    tpm = [WindowCheck("u:r:tpm", limit=10_000, window_seconds=60, amount=100)]
    hold = BudgetHold(account="7", amount=50, initial_balance=1000)
    decisions = await asyncio.gather(*(store.admit(tpm, [hold]) for _ in range(20)))  # 2000 tokens, 1000 held
    assert all(d.admitted for d in decisions)
    key = decisions[0].admission.windows[0].key
    await asyncio.gather(*(store.settle([(key, -90)], [BudgetRelease(account="7", reserved=50, spent=5, epoch=d.epoch(0))]) for d in decisions))
    after = await store.admit(tpm, [BudgetHold(account="7", amount=900, initial_balance=1000)])
    assert after.admitted and after.admission.windows[0].used == 20 * 10 + 100  # real tokens counted, estimates gone
    assert (await store.admit([], [BudgetHold(account="7", amount=1, initial_balance=1000)])).budget_refused  # 1000 − 100 − 900


@pytest.mark.skipif(not REDIS_URL, reason="the in-process store keeps no keys")
async def test_window_counters_expire_a_minute_after_their_window_ends() -> None:
    """Redis does not fill up with old windows: a counter expires a minute after its window's
    end, set when the window's first call creates it and never pushed back by later calls."""
    prefix = f"tollgate-test:{uuid.uuid4().hex}:"
    redis = _redis()
    store = RedisQuotaStore(redis, prefix)
    checks = [WindowCheck("u:r:rpm", limit=100, window_seconds=60, amount=1),
              WindowCheck("u:r:tpm", limit=10_000, window_seconds=60, amount=30)]
    try:
        first = await store.admit(checks)
        keys = [window.key for window in first.admission.windows]
        expiries = [await redis.pttl(key) for key in keys]
        for window, expiry in zip(first.admission.windows, expiries, strict=True):
            assert window.reset_in * 1000 + 59_000 < expiry <= window.reset_in * 1000 + 60_000
        await asyncio.sleep(0.05)
        later = await store.admit(checks)
        await store.settle([(later.admission.windows[1].key, -20)])
        await store.flush()
        now = [await redis.pttl(key) for key in keys]
        assert all(left < expiry for left, expiry in zip(now, expiries, strict=True))  # counting down, not reset
        assert [int(await redis.get(key)) for key in keys] == [2, 40]
    finally:
        await store.close()
        await redis.aclose()


@pytest.mark.skipif(not REDIS_URL, reason="the in-process store keeps no keys")
async def test_a_refused_call_leaves_no_counter_without_an_expiry() -> None:
    """A window is counted before the next is checked, and taken back when a later one (or the
    budget) refuses: a counter this call created must not stay behind, never to expire."""
    prefix = f"tollgate-test:{uuid.uuid4().hex}:"
    redis = _redis()
    store = RedisQuotaStore(redis, prefix)
    windows = [WindowCheck("u:r:rpm", limit=10, window_seconds=60, amount=1),
               WindowCheck("u:r:rpd", limit=10, window_seconds=86_400, amount=0),
               WindowCheck("u:r:tpm", limit=5, window_seconds=60, amount=8)]
    try:
        assert not (await store.admit(windows)).admitted  # tpm: 8 > 5
        assert (await store.admit(windows[:2], [BudgetHold(account="9", amount=50, initial_balance=10)])).budget_refused
        assert await redis.keys(f"{prefix}limit:*") == []
        assert (await store.admit(windows[:2])).admission.windows[0].used == 1  # nothing was left counted
        assert all([await redis.pttl(key) > 0 for key in await redis.keys(f"{prefix}limit:*")])
    finally:
        await store.close()
        await redis.aclose()


@pytest.mark.skipif(not REDIS_URL, reason="the in-process store settles at once")
async def test_a_settlement_no_later_call_picks_up_still_reaches_redis() -> None:
    """Settlements wait a few milliseconds to ride with the next admission; with none coming,
    another replica (reading Redis directly) still sees the hold given back soon after."""
    from api.quota.balances import RedisBudgetStore
    from api.quota.store import SETTLE_LINGER_SECONDS

    prefix = f"tollgate-test:{uuid.uuid4().hex}:"
    redis = _redis()
    store, other_replica = RedisQuotaStore(redis, prefix), RedisBudgetStore(redis, prefix)
    try:
        held = await store.admit([], [BudgetHold(account="1", amount=60, initial_balance=100)])
        assert await other_replica.balance(1) == 40
        await store.settle([], [BudgetRelease(account="1", reserved=60, spent=10, epoch=held.epoch(0))])
        await asyncio.sleep(SETTLE_LINGER_SECONDS + 0.2)
        assert await other_replica.balance(1) == 90
    finally:
        await store.close()
        await redis.aclose()
