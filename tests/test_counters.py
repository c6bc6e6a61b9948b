"""The shared window counters behind login throttling (and, later, rate limits)."""

import asyncio
import uuid

import pytest

from api.settings import RedisSettings
from api.state import MemoryCounterStore, RedisCounterStore
from api.state.redis_client import build_redis
from conftest import REDIS_URL


@pytest.fixture(params=["memory"] + (["redis"] if REDIS_URL else []))
async def store(request: pytest.FixtureRequest):
    if request.param == "memory":
        yield MemoryCounterStore()
        return
    redis = build_redis(RedisSettings(url=REDIS_URL))
    yield RedisCounterStore(redis, f"tollgate-test:{uuid.uuid4().hex}:")
    await redis.aclose()


async def test_counts_within_a_window_and_resets_after(store) -> None:
    assert (await store.peek("k")).count == 0
    assert [(await store.hit("k", 1)).count for _ in range(3)] == [1, 2, 3]
    window = await store.peek("k")
    assert window.count == 3 and 0 < window.reset_in <= 1 and window.retry_after == 1
    assert (await store.peek("other")).count == 0
    await asyncio.sleep(1.05)
    assert (await store.peek("k")).count == 0
    assert (await store.hit("k", 1)).count == 1


async def test_concurrent_hits_are_counted_exactly(store) -> None:
    counts = await asyncio.gather(*(store.hit("burst", 60) for _ in range(200)))
    assert sorted(c.count for c in counts) == list(range(1, 201))


async def test_memory_store_stays_bounded() -> None:
    store = MemoryCounterStore(max_keys=100)
    for i in range(1_000):
        await store.hit(f"k{i}", 60)
    assert len(store._windows) <= 100
