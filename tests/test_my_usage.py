"""`GET /v1/me/usage` right after a call: the records reach the database in batches, but a
user's read of their own usage lists the calls the serving process has already answered,
in order, page by page, filtered, and once each whether or not they are written yet."""

from __future__ import annotations

import time

import httpx

from conftest import AppFactory, Models, Seeder, SeededUser, usage_rows

CHAT = {"model": "chat", "messages": [{"role": "user", "content": "a b"}]}


async def _setup(app_factory: AppFactory, upstream) -> tuple[httpx.AsyncClient, Models, SeededUser, int]:
    # A writer that waits half a minute before it writes: every record stays pending until
    # the test flushes it.
    client = await app_factory(usage_write_interval_seconds=30)
    models = Models(client, Seeder(client))
    router = await models.router(cost_prompt_tokens=1, cost_completion_tokens=1)
    await models.provider(router, upstream.base_url)
    return client, models, await models.user_for(router), router


async def _mine(client: httpx.AsyncClient, user: SeededUser, query: str = "") -> dict:
    response = await client.get(f"/v1/me/usage{query}", headers=user.headers)
    assert response.status_code == 200, response.text
    return response.json()


async def test_a_call_is_listed_at_once_and_once_written(app_factory: AppFactory, upstream) -> None:
    client, _, user, _ = await _setup(app_factory, upstream)
    answer = (await client.post("/v1/chat/completions", json=CHAT, headers=user.headers)).json()

    listed = await _mine(client, user)
    assert listed["total"] == 1 and len(listed["data"]) == 1
    item = listed["data"][0]
    assert item["id"] is None  # not written yet
    assert item["object"] == "me.usage" and item["endpoint"] == "/v1/chat/completions" and item["status"] == 200
    assert item["key"] == "test" and item["model"] == "chat"
    assert item["usage"]["total_tokens"] == answer["usage"]["total_tokens"] == 7
    assert item["usage"]["cost"] == answer["usage"]["cost"]
    assert abs(item["created"] - time.time()) < 60

    assert len(await usage_rows(client)) == 1  # now written
    written = await _mine(client, user)
    assert written["total"] == 1 and len(written["data"]) == 1
    assert isinstance(written["data"][0]["id"], int)
    assert {**written["data"][0], "id": None} == item


async def test_pages_merge_written_and_pending_records_newest_first(app_factory: AppFactory, upstream) -> None:
    client, _, user, _ = await _setup(app_factory, upstream)
    for n in range(5):
        if n == 3:
            await usage_rows(client)  # the first three written, the last two still pending
        body = {**CHAT, "messages": [{"role": "user", "content": "word " * (n + 1)}]}
        assert (await client.post("/v1/chat/completions", json=body, headers=user.headers)).status_code == 200

    def prompts(page: dict) -> list[int]:
        return [item["usage"]["prompt_tokens"] for item in page["data"]]

    everything = await _mine(client, user, "?limit=100")
    assert everything["total"] == 5
    assert prompts(everything) == [5, 4, 3, 2, 1]
    assert [item["id"] is None for item in everything["data"]] == [True, True, False, False, False]
    for offset in range(6):
        for limit in (1, 2, 3):
            page = await _mine(client, user, f"?offset={offset}&limit={limit}")
            assert page["total"] == 5
            assert prompts(page) == [5, 4, 3, 2, 1][offset:offset + limit], (offset, limit)

    await usage_rows(client)
    after = await _mine(client, user, "?limit=100")
    assert prompts(after) == [5, 4, 3, 2, 1] and all(isinstance(item["id"], int) for item in after["data"])


async def test_pending_records_follow_the_filters_and_stay_their_users(app_factory: AppFactory, upstream) -> None:
    client, models, alice, router = await _setup(app_factory, upstream)
    bob = await models.user_for(router)
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=alice.headers)).status_code == 200
    assert (await client.post("/v1/embeddings", json={"model": "chat", "input": "x"}, headers=alice.headers)).status_code == 400

    assert (await _mine(client, alice))["total"] == 2
    only_chat = await _mine(client, alice, "?endpoint=/v1/chat/completions")
    assert only_chat["total"] == 1 and only_chat["data"][0]["endpoint"] == "/v1/chat/completions"
    assert (await _mine(client, alice, "?endpoint=/v1/rerank"))["total"] == 0
    assert (await _mine(client, alice, f"?start_time={int(time.time()) + 3600}"))["total"] == 0
    assert (await _mine(client, alice, "?end_time=1000"))["total"] == 0
    assert await _mine(client, bob) == {"object": "list", "data": [], "total": 0}


async def test_a_record_written_while_still_queued_is_listed_once(app_factory: AppFactory, upstream) -> None:
    """What a read sees when a batch commits between its look at the queue and its query."""
    client, _, user, _ = await _setup(app_factory, upstream)
    assert (await client.post("/v1/chat/completions", json=CHAT, headers=user.headers)).status_code == 200
    writer = client.app.state.context.usage_writer  # type: ignore[attr-defined]
    await writer.write_now(writer.unwritten(user.id))  # in the database, and still in the queue

    listed = await _mine(client, user)
    assert listed["total"] == 1 and len(listed["data"]) == 1 and isinstance(listed["data"][0]["id"], int)
    assert len(await usage_rows(client)) == 1  # the queued copy is skipped as already written
    assert (await _mine(client, user))["total"] == 1
