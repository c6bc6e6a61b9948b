"""The Redis quota store's scripts over redis-py, against a real Redis: what a restart, a lost
connection or a stalled server does to admissions and settlements."""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from api.errors import DependencyUnavailableError
from api.quota.store import BudgetHold, BudgetRelease, RedisQuotaStore
from api.quota.windows import WindowCheck
from api.settings import RedisSettings
from api.state.redis_client import build_redis
from conftest import REDIS_URL

pytestmark = pytest.mark.skipif(not REDIS_URL, reason="needs a Redis server (TOLLGATE_TEST_REDIS_URL)")


def _url(db: int = 0, credentials: str = "", name: str = "") -> str:
    assert REDIS_URL is not None
    scheme, rest = REDIS_URL.split("://", 1)
    host = rest.split("/", 1)[0].split("@")[-1]
    return f"{scheme}://{credentials}{host}/{db}" + (f"?client_name={name}" if name else "")


class Store:
    """A quota store on a client built as the app builds it, its connections named so that a
    test can kill them."""

    def __init__(self, timeout_seconds: float = 5, url: str | None = None) -> None:
        self.name = f"tollgate-test-{uuid.uuid4().hex[:12]}"
        self.redis = build_redis(RedisSettings(url=url or _url(name=self.name), timeout_seconds=timeout_seconds))
        self.prefix = f"tollgate-test:{uuid.uuid4().hex}:"
        self.quotas = RedisQuotaStore(self.redis, self.prefix)

    async def close(self) -> None:
        await self.quotas.close()
        await self.redis.aclose()


@pytest.fixture
async def admin() -> AsyncIterator[Redis]:
    client = Redis.from_url(_url())
    yield client
    await client.aclose()


@pytest.fixture
async def store() -> AsyncIterator[Store]:
    opened = Store()
    yield opened
    await opened.close()


async def _kill_connections(admin: Redis, name: str) -> int:
    clients = await admin.client_list()
    ids = [client["id"] for client in clients if client.get("name") == name]
    for client_id in ids:
        await admin.execute_command("CLIENT", "KILL", "ID", client_id)
    return len(ids)


def _tpm(amount: int, limit: int = 100) -> list[WindowCheck]:
    return [WindowCheck("u:r:tpm", limit=limit, window_seconds=60, amount=amount)]


async def test_scripts_flushed_from_redis_are_loaded_again(store: Store, admin: Redis) -> None:
    assert (await store.quotas.admit(_tpm(1))).admission.windows[0].used == 1
    await admin.script_flush()  # what a Redis restart or failover does to the script cache
    assert (await store.quotas.admit(_tpm(1))).admission.windows[0].used == 2
    assert (await store.quotas.admit(_tpm(1))).admission.windows[0].used == 3


async def test_after_a_restart_a_settlement_still_reaches_redis_before_the_admission_made_after_it(
    store: Store, admin: Redis
) -> None:
    first = await store.quotas.admit(_tpm(60))
    # What a restart does to the client: its script cache is gone, and so is its connection.
    await admin.script_flush()
    assert await _kill_connections(admin, store.name) >= 1
    await store.quotas.settle([(first.admission.windows[0].key, -50)])  # rides with the next admission
    # 10 + 80 fits in 100, 60 + 80 does not: admitted only if the settlement ran first.
    after = await store.quotas.admit(_tpm(80))
    assert after.admitted and after.admission.windows[0].used == 90


async def test_after_scripts_were_flushed_a_settlement_still_reaches_redis_before_the_next_admission(
    store: Store, admin: Redis
) -> None:
    await store.quotas.admit(_tpm(10))
    await admin.script_flush()
    # The first admission after the flush finds its script missing and loads the scripts again.
    first = await store.quotas.admit(_tpm(50))
    await store.quotas.settle([(first.admission.windows[0].key, -50)])  # rides with the next admission
    # 10 + 80 fits in 100, 60 + 80 does not: admitted only if the settlement ran first.
    after = await store.quotas.admit(_tpm(80))
    assert after.admitted and after.admission.windows[0].used == 90


async def test_a_lost_connection_refuses_the_call_in_flight_and_the_next_call_reconnects(store: Store, admin: Redis) -> None:
    await store.quotas.admit(_tpm(1))
    # Writes (scripts included) wait while paused: the call is in flight when its connection dies.
    await admin.execute_command("CLIENT", "PAUSE", 2000, "WRITE")
    try:
        in_flight = asyncio.ensure_future(store.quotas.admit(_tpm(1)))
        await asyncio.sleep(0.1)
        assert not in_flight.done()
        assert await _kill_connections(admin, store.name) >= 1
        with pytest.raises(DependencyUnavailableError):  # fail closed: a 503, nothing let through
            await asyncio.wait_for(in_flight, timeout=1.5)
    finally:
        await admin.execute_command("CLIENT", "UNPAUSE")
    # Not sent again behind the caller's back: the refused call counted nothing.
    assert (await store.quotas.admit(_tpm(1))).admission.windows[0].used == 2


# Keeps Redis busy for 0.5 s: the commands sent meanwhile wait, and run once it is done. A
# client timing out after 0.3 s that sent its command again (on a new connection) would have
# it answered.
BUSY = "local t = redis.call('TIME') repeat local n = redis.call('TIME') until (n[1] - t[1]) * 1000000 + n[2] - t[2] > 500000"


@contextlib.asynccontextmanager
async def redis_busy(admin: Redis) -> AsyncIterator[None]:
    busy = asyncio.ensure_future(admin.eval(BUSY, 0))
    await asyncio.sleep(0.05)
    yield
    await busy
    await asyncio.sleep(0.1)  # what waited behind it has run


async def test_an_admission_whose_reply_was_lost_is_not_sent_again(admin: Redis) -> None:
    """Redis runs an admission after its caller gave up waiting (a timeout): resending it
    would count the call twice."""
    slow = Store(timeout_seconds=0.3)
    try:
        await slow.quotas.admit([], [BudgetHold(account="1", amount=10, initial_balance=100)])  # connected, scripts loaded
        async with redis_busy(admin):
            with pytest.raises(DependencyUnavailableError):
                await slow.quotas.admit([], [BudgetHold(account="1", amount=10, initial_balance=100)])
        # Taken once, by the call that timed out (the safe side), not twice.
        assert await admin.get(f"{slow.prefix}budget:1:balance") == b"80"
    finally:
        await slow.close()


async def test_a_settlement_whose_reply_was_lost_is_applied_once(admin: Redis) -> None:
    slow = Store(timeout_seconds=0.3)
    try:
        held = await slow.quotas.admit([], [BudgetHold(account="1", amount=60, initial_balance=100)])
        async with redis_busy(admin):
            await slow.quotas.settle([], [BudgetRelease(account="1", reserved=60, spent=10, epoch=held.epoch(0))])
            await slow.quotas.flush()  # times out: the settlement is logged as dropped, not resent
        assert await admin.get(f"{slow.prefix}budget:1:balance") == b"90"  # 50 given back once (twice: 80)
    finally:
        await slow.close()


async def test_a_caller_gone_among_others_leaves_them_their_own_counts(store: Store) -> None:
    calls = [asyncio.ensure_future(store.quotas.admit(_tpm(1, limit=1000))) for _ in range(10)]
    await asyncio.sleep(0)  # all queued, none answered
    calls[4].cancel()
    answered = [await call for n, call in enumerate(calls) if n != 4]
    with pytest.raises(asyncio.CancelledError):
        await calls[4]
    assert sorted(d.admission.windows[0].used for d in answered) == list(range(1, 10))
    # Whatever the cancelled call took was given back.
    assert (await store.quotas.admit(_tpm(1, limit=1000))).admission.windows[0].used == 10


async def test_the_database_index_and_credentials_of_the_url_are_used(admin: Redis) -> None:
    user, password = f"tollgate-test-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    await admin.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~tollgate-test:*", "+@all")
    try:
        allowed = Store(url=_url(3, f"{user}:{password}@"))
        try:
            await allowed.quotas.admit(_tpm(7))
        finally:
            await allowed.close()
        in_db_3 = Redis.from_url(_url(3))
        try:
            assert [await in_db_3.get(key) for key in await in_db_3.keys(f"{allowed.prefix}*")] == [b"7"]
            await in_db_3.delete(*await in_db_3.keys(f"{allowed.prefix}*"))
        finally:
            await in_db_3.aclose()
        assert await admin.keys(f"{allowed.prefix}*") == []
        wrong = Store(url=_url(0, f"{user}:not-the-password@"))
        try:
            with pytest.raises(DependencyUnavailableError):
                await wrong.quotas.admit(_tpm(1))
        finally:
            await wrong.close()
    finally:
        await admin.execute_command("ACL", "DELUSER", user)


async def _evalsha_calls(admin: Redis) -> int:
    return int((await admin.info("commandstats")).get("cmdstat_evalsha", {}).get("calls", 0))


async def test_admissions_in_flight_together_go_to_redis_as_one_command(store: Store, admin: Redis) -> None:
    await store.quotas.admit(_tpm(1, limit=1000))  # the scripts loaded, the connection made
    before = await _evalsha_calls(admin)
    decisions = await asyncio.gather(*(store.quotas.admit(_tpm(1, limit=1000)) for _ in range(16)))
    # One EVALSHA for the sixteen (redis-py packs and parses each command in Python), each
    # admission still counted on its own, in the order they were made.
    assert await _evalsha_calls(admin) - before == 1
    assert [d.admission.windows[0].used for d in decisions] == list(range(2, 18))


async def test_an_admission_that_fails_leaves_the_others_sent_with_it_their_counts(store: Store, admin: Redis) -> None:
    # A counter Redis cannot count in (another program's list under the same name): its
    # admission fails; the admissions sent in the same command are taken as if sent alone.
    broken = WindowCheck("broken", limit=100, window_seconds=10**9, amount=1)
    await admin.rpush(f"{store.prefix}limit:broken:1", "not a counter")
    calls = [store.quotas.admit([broken] if n == 2 else _tpm(1, limit=1000)) for n in range(5)]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(outcomes[2], ResponseError) and "WRONGTYPE" in str(outcomes[2])
    assert [d.admission.windows[0].used for n, d in enumerate(outcomes) if n != 2] == [1, 2, 3, 4]


def test_a_key_prefix_with_whitespace_is_refused() -> None:
    with pytest.raises(ValueError, match="whitespace"):
        RedisQuotaStore(Redis(), "tollgate prod:")
