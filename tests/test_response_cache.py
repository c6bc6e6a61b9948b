"""The response cache: identical calls answered without the provider, per organisation, as a
stream when asked, recorded, counted against request limits, and gone after their time."""

from __future__ import annotations

import asyncio
import json

import pytest

from conftest import ADMIN, Models, Seeder, usage_rows

BODY = {"model": "chat", "messages": [{"role": "user", "content": "one two three"}], "max_tokens": 5, "temperature": 0}


async def cached_router(models: Models, upstream, ttl: int = 60, **extra: object) -> int:
    router = await models.router("chat", cost_prompt_tokens=1, cost_completion_tokens=1, cache_ttl_seconds=ttl,
                                 cost_cache_hit=0.0001, **extra)
    await models.provider(router, upstream.base_url)
    return router


def provider_calls(upstream) -> int:
    return sum(1 for request in upstream.received if request.path == "/v1/chat/completions")


def stream_text(body: str) -> tuple[str, list[dict]]:
    """The content of a chat stream, and its chunks."""
    chunks = [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: {")]
    text = "".join((c.get("delta") or {}).get("content") or "" for chunk in chunks for c in chunk.get("choices") or [])
    return text, chunks


async def test_an_identical_call_is_answered_from_the_cache_and_recorded(client, models: Models, upstream) -> None:
    router = await cached_router(models, upstream)
    user = await models.user_for(router)
    first = await client.post("/v1/chat/completions", json=BODY, headers=user.headers)
    second = await client.post("/v1/chat/completions", json={**BODY, "user": "someone", "stream": False}, headers=user.headers)
    assert first.status_code == second.status_code == 200
    assert (first.headers["x-tollgate-cache"], second.headers["x-tollgate-cache"]) == ("miss", "hit")
    assert provider_calls(upstream) == 1
    assert second.json()["choices"] == first.json()["choices"]
    assert second.json()["usage"]["cached"] is True and second.json()["usage"]["cost"] == pytest.approx(0.0001)
    rows = sorted(await usage_rows(client), key=lambda r: r.id)
    assert [(r.status, r.cached, r.cost_nanos, r.total_tokens) for r in rows] == [
        (200, False, rows[0].cost_nanos, rows[0].total_tokens), (200, True, 100_000, 0)]
    different = await client.post("/v1/chat/completions", json={**BODY, "max_tokens": 6}, headers=user.headers)
    assert different.headers["x-tollgate-cache"] == "miss" and provider_calls(upstream) == 2


async def test_another_organisations_identical_call_is_not_served_from_it(client, models: Models, upstream) -> None:
    router = await cached_router(models, upstream)
    seed = Seeder(client)
    ours, theirs = await seed.organization(), await seed.organization()
    alice = await models.user_for(router, organization=ours)
    bob = await models.user_for(router, organization=ours)
    eve = await models.user_for(router, organization=theirs)
    assert (await client.post("/v1/chat/completions", json=BODY, headers=alice.headers)).headers["x-tollgate-cache"] == "miss"
    assert (await client.post("/v1/chat/completions", json=BODY, headers=bob.headers)).headers["x-tollgate-cache"] == "hit"
    assert (await client.post("/v1/chat/completions", json=BODY, headers=eve.headers)).headers["x-tollgate-cache"] == "miss"
    assert provider_calls(upstream) == 2


async def test_a_streamed_call_is_cached_and_served_from_cache_as_a_stream(client, models: Models, upstream) -> None:
    router = await cached_router(models, upstream)
    user = await models.user_for(router)
    live = await client.post("/v1/chat/completions", json={**BODY, "stream": True}, headers=user.headers)
    replayed = await client.post("/v1/chat/completions", json={**BODY, "stream": True}, headers=user.headers)
    whole = await client.post("/v1/chat/completions", json=BODY, headers=user.headers)
    assert (live.headers["x-tollgate-cache"], replayed.headers["x-tollgate-cache"], whole.headers["x-tollgate-cache"]) == (
        "miss", "hit", "hit")
    assert provider_calls(upstream) == 1
    live_text, _ = stream_text(live.text)
    replayed_text, chunks = stream_text(replayed.text)
    assert replayed_text == live_text == whole.json()["choices"][0]["message"]["content"] and live_text
    assert replayed.text.rstrip().endswith("data: [DONE]")
    assert chunks[-1]["usage"]["cached"] is True and chunks[-1]["choices"] == []
    assert any(c.get("finish_reason") for chunk in chunks for c in chunk["choices"])


async def test_only_temperature_zero_is_cached_unless_the_router_says_so(client, models: Models, upstream) -> None:
    router = await cached_router(models, upstream)
    user = await models.user_for(router)
    warm = {key: value for key, value in BODY.items() if key != "temperature"}  # the providers' default: 1
    for _ in range(2):
        assert (await client.post("/v1/chat/completions", json=warm, headers=user.headers)).status_code == 200
    assert provider_calls(upstream) == 2
    assert (await client.patch(f"/v1/admin/routers/{router}", json={"cache_any_temperature": True},
                               headers=ADMIN)).status_code == 204
    for _ in range(2):
        assert (await client.post("/v1/chat/completions", json=warm, headers=user.headers)).status_code == 200
    assert provider_calls(upstream) == 3


async def test_a_hit_counts_against_request_limits_and_a_key_may_opt_out(client, models: Models, upstream) -> None:
    router = await cached_router(models, upstream)
    user = await models.user_for(router, limits={"rpm": 3})
    assert [(await client.post("/v1/chat/completions", json=BODY, headers=user.headers)).status_code
            for _ in range(4)] == [200, 200, 200, 429]
    assert provider_calls(upstream) == 1
    other = await models.user_for(router)
    created = await client.post("/v1/me/keys", json={"name": "fresh", "use_cache": False}, headers=other.headers)
    fresh = {"Authorization": f"Bearer {created.json()['token']}"}
    assert (await client.post("/v1/chat/completions", json=BODY, headers=fresh)).headers.get("x-tollgate-cache") is None
    assert provider_calls(upstream) == 2


async def test_an_answer_expires_after_its_time_to_live(client, models: Models, upstream) -> None:
    router = await cached_router(models, upstream, ttl=1)
    user = await models.user_for(router)
    assert (await client.post("/v1/chat/completions", json=BODY, headers=user.headers)).headers["x-tollgate-cache"] == "miss"
    assert (await client.post("/v1/chat/completions", json=BODY, headers=user.headers)).headers["x-tollgate-cache"] == "hit"
    await asyncio.sleep(1.2)
    assert (await client.post("/v1/chat/completions", json=BODY, headers=user.headers)).headers["x-tollgate-cache"] == "miss"


async def test_replicas_share_the_cache_through_redis(app_factory, backend, upstream) -> None:
    if backend.redis_url is None:
        pytest.skip("without Redis each process has its own cache")
    first, second = await app_factory(), await app_factory()
    models = Models(first, Seeder(first))
    router = await cached_router(models, upstream)
    user = await models.user_for(router)
    await second.app.state.context.catalog.reload()
    assert (await first.post("/v1/chat/completions", json=BODY, headers=user.headers)).headers["x-tollgate-cache"] == "miss"
    assert (await second.post("/v1/chat/completions", json=BODY, headers=user.headers)).headers["x-tollgate-cache"] == "hit"
    assert provider_calls(upstream) == 1


async def test_embeddings_and_rerank_are_cached_too(client, models: Models, upstream) -> None:
    embed = await models.router("embed", type="text-embeddings-inference", cache_ttl_seconds=60)
    await models.provider(embed, upstream.base_url, model_name="fake-embed")
    rank = await models.router("rank", type="text-classification", cache_ttl_seconds=60)
    await models.provider(rank, upstream.base_url)
    user = await models.user_for(embed, rank)
    before = len(upstream.received)  # adding the providers checked them
    for path, body in (("/v1/embeddings", {"model": "embed", "input": "cats"}),
                       ("/v1/rerank", {"model": "rank", "query": "cats", "documents": ["cats hunt", "dogs bark"]})):
        first = await client.post(path, json=body, headers=user.headers)
        second = await client.post(path, json=body, headers=user.headers)
        assert (first.headers["x-tollgate-cache"], second.headers["x-tollgate-cache"]) == ("miss", "hit"), path
        assert {k: v for k, v in second.json().items() if k != "usage"} == {k: v for k, v in first.json().items() if k != "usage"}
    assert len(upstream.received) - before == 2


async def test_anthropic_messages_are_cached_with_the_chat_they_send(client, models: Models, upstream) -> None:
    """/v1/messages sends the provider a chat: a second identical message is answered from the
    cache, in Anthropic's shape, whole or as Anthropic's event stream."""
    router = await cached_router(models, upstream)
    user = await models.user_for(router)
    message = {"model": "chat", "max_tokens": 5, "temperature": 0, "messages": [{"role": "user", "content": "one two three"}]}
    first = await client.post("/v1/messages", json=message, headers=user.headers)
    second = await client.post("/v1/messages", json=message, headers=user.headers)
    streamed = await client.post("/v1/messages", json={**message, "stream": True}, headers=user.headers)
    assert first.status_code == second.status_code == streamed.status_code == 200, (first.text, second.text, streamed.text)
    assert [r.headers["x-tollgate-cache"] for r in (first, second, streamed)] == ["miss", "hit", "hit"]
    assert provider_calls(upstream) == 1
    assert second.json()["type"] == "message" and second.json()["content"] == first.json()["content"]
    text = "".join(json.loads(line[6:]).get("delta", {}).get("text", "") for line in streamed.text.splitlines()
                   if line.startswith("data: {") and '"content_block_delta"' in line)
    assert text == first.json()["content"][0]["text"] and "event: message_stop" in streamed.text
    rows = await usage_rows(client)
    assert sorted(r.cached for r in rows) == [False, True, True]
