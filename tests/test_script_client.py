"""The pipelined client that runs the admission and settlement scripts, against real Redis."""

import asyncio
import time
import uuid

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from api.state.script_client import ScriptClient
from conftest import REDIS_URL

pytestmark = pytest.mark.skipif(not REDIS_URL, reason="needs a Redis server (TOLLGATE_TEST_REDIS_URL)")

# Adds ARGV[1] to KEYS[1] and returns the new value and the script's argument.
INCR = "local v = redis.call('INCRBY', KEYS[1], ARGV[1]); redis.call('PEXPIRE', KEYS[1], 60000); return {v, ARGV[1]}"


def _url(db: int, credentials: str = "") -> str:
    assert REDIS_URL is not None
    scheme, rest = REDIS_URL.split("://", 1)
    host = rest.split("/", 1)[0].split("@")[-1]
    return f"{scheme}://{credentials}{host}/{db}"


@pytest.fixture
async def redis():
    client = Redis.from_url(_url(0))
    yield client
    await client.aclose()


@pytest.fixture
async def scripts():
    client = ScriptClient(_url(0), timeout_seconds=5)
    yield client
    await client.close()


def _key() -> str:
    return f"tollgate-test:{uuid.uuid4().hex}"


async def test_concurrent_calls_each_get_their_own_reply(scripts: ScriptClient) -> None:
    script, key = scripts.register(INCR), _key()
    replies = await asyncio.gather(*(scripts.run(script, [key], [n]) for n in range(1, 301)))
    # Pipelined on one connection: every caller got the reply to its own call, in order.
    assert [int(arg) for _, arg in replies] == list(range(1, 301))
    assert sorted(total for total, _ in replies)[-1] == sum(range(1, 301))


async def test_a_script_flushed_from_redis_is_sent_again(scripts: ScriptClient, redis: Redis) -> None:
    script, key = scripts.register(INCR), _key()
    assert (await scripts.run(script, [key], [1]))[0] == 1
    await redis.script_flush()  # what a Redis restart or failover does to the script cache
    assert (await scripts.run(script, [key], [1]))[0] == 2
    assert (await scripts.run(script, [key], [1]))[0] == 3


async def test_a_caller_cancelled_mid_call_leaves_the_replies_in_step(scripts: ScriptClient, redis: Redis) -> None:
    script, key = scripts.register(INCR), _key()
    await scripts.run(script, [key], [1])
    cancelled = asyncio.ensure_future(scripts.run(script, [key], [10]))
    await asyncio.sleep(0)  # sent, not yet answered
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    # The cancelled call still ran in Redis; the next caller gets its own reply, not that one.
    assert await scripts.run(script, [key], [100]) == [111, b"100"]


async def test_errors_raised_by_a_script_reach_its_caller_only(scripts: ScriptClient) -> None:
    failing, working, key = scripts.register("return redis.error_reply('refused by script')"), scripts.register(INCR), _key()
    outcomes = await asyncio.gather(scripts.run(failing, [key], []), scripts.run(working, [key], [5]), return_exceptions=True)
    assert isinstance(outcomes[0], ResponseError) and "refused by script" in str(outcomes[0])
    assert outcomes[1] == [5, b"5"]


async def test_the_database_index_of_the_url_is_used(redis: Redis) -> None:
    key = _key()
    client = ScriptClient(_url(3), timeout_seconds=5)
    try:
        await client.run(client.register(INCR), [key], [7])
    finally:
        await client.close()
    assert await redis.get(key) is None
    in_db_3 = Redis.from_url(_url(3))
    try:
        assert await in_db_3.get(key) == b"7"
        await in_db_3.delete(key)
    finally:
        await in_db_3.aclose()


async def test_credentials_of_the_url_are_used(redis: Redis) -> None:
    user, password = f"tollgate-test-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    await redis.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~tollgate-test:*", "+@all")
    try:
        allowed = ScriptClient(_url(0, f"{user}:{password}@"), timeout_seconds=5)
        assert (await allowed.run(allowed.register(INCR), [_key()], [1]))[0] == 1
        await allowed.close()
        wrong = ScriptClient(_url(0, f"{user}:not-the-password@"), timeout_seconds=5)
        with pytest.raises(RedisConnectionError):
            await wrong.run(wrong.register(INCR), [_key()], [1])
        await wrong.close()
    finally:
        await redis.execute_command("ACL", "DELUSER", user)


async def test_a_lost_connection_fails_the_calls_in_flight_and_the_next_call_reconnects(
    scripts: ScriptClient, redis: Redis
) -> None:
    script, key = scripts.register(INCR), _key()
    await scripts.run(script, [key], [1])
    ours = await scripts.execute("CLIENT", "ID")  # asked on the client's own connection
    # Writes (scripts included) wait while paused: the call is in flight when its connection dies.
    await redis.execute_command("CLIENT", "PAUSE", 3000, "WRITE")
    try:
        in_flight = asyncio.ensure_future(scripts.run(script, [key], [1]))
        await asyncio.sleep(0.1)
        assert not in_flight.done()
        await redis.execute_command("CLIENT", "KILL", "ID", ours)
        with pytest.raises(RedisConnectionError):
            await asyncio.wait_for(in_flight, timeout=2)
    finally:
        await redis.execute_command("CLIENT", "UNPAUSE")
    assert (await scripts.run(script, [key], [1]))[0] == 2


async def test_after_a_redis_restart_calls_reach_redis_in_the_order_they_were_made(scripts: ScriptClient, redis: Redis) -> None:
    increment, read = scripts.register(INCR), scripts.register("return redis.call('GET', KEYS[1])")
    key = _key()
    await scripts.run(increment, [key], [1])
    ours = await scripts.execute("CLIENT", "ID")
    # What a restart does to the client: its script cache is gone, and so is its connection.
    await redis.script_flush()
    await redis.execute_command("CLIENT", "KILL", "ID", ours)
    await asyncio.sleep(0.05)
    assert await scripts.run(read, [key], []) == b"1"  # connects again
    adding, reading = scripts.submit(increment, [key], [1]), scripts.submit(read, [key], [])
    # Made in this order, run in this order (a settlement then the admission that follows it).
    assert (await adding)[0] == 2 and await reading == b"2"


async def test_a_call_made_later_gets_its_own_full_timeout(redis: Redis) -> None:
    """One timer watches every call in flight: a call is timed out once its own deadline has
    passed, never on the deadline of one before it."""
    client = ScriptClient(_url(0), timeout_seconds=0.6)
    script, key = client.register(INCR), _key()
    try:
        await client.run(script, [key], [1])  # connects; the timer is set for this call
        await asyncio.sleep(0.4)
        await redis.execute_command("CLIENT", "PAUSE", 3000, "WRITE")
        try:
            started = time.monotonic()
            with pytest.raises(RedisTimeoutError):
                await client.run(script, [key], [1])
            waited = time.monotonic() - started
        finally:
            await redis.execute_command("CLIENT", "UNPAUSE")
        assert 0.55 <= waited < 2.5, waited
        assert (await client.run(script, [key], [1]))[0] >= 2  # connected again
    finally:
        await client.close()
