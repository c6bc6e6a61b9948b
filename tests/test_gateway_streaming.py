"""Streaming over real HTTP: first chunk before the upstream finishes; disconnects are charged."""

import asyncio
import json
import time

import httpx

from api.calls.tokens import count_text
from conftest import Models, live_server, usage_rows


async def test_first_chunk_arrives_before_the_upstream_has_finished(client, models: Models, upstream) -> None:
    router = await models.router()
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router)
    upstream.behaviour.reply_words = 6
    upstream.behaviour.chunk_delay_seconds = 0.3  # the whole answer takes ≥ 1.8 s
    async with live_server(client) as base_url, httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        started = time.monotonic()
        first_content = None
        body = {"model": "chat", "messages": [{"role": "user", "content": "x"}], "stream": True}
        async with http.stream("POST", "/v1/chat/completions", json=body, headers=user.headers) as response:
            assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
            async for line in response.aiter_lines():
                if first_content is None and '"content": "word0"' in line:
                    first_content = time.monotonic() - started
        total = time.monotonic() - started
    assert first_content is not None and total >= 1.7
    assert first_content < 0.8, f"first chunk after {first_content:.2f}s of {total:.2f}s: buffered"


async def test_client_disconnect_mid_stream_is_charged_and_cancels_upstream(client, models: Models, upstream) -> None:
    # least_busy: the provider's in-flight count is shared, so its release can be checked.
    router = await models.router(cost_prompt_tokens=1_000_000, cost_completion_tokens=1_000_000, load_balancing_strategy="least_busy")
    provider = await models.provider(router, upstream.base_url)
    user = await models.user_for(router)
    upstream.behaviour.reply_words = 50
    upstream.behaviour.chunk_delay_seconds = 0.1
    async with live_server(client) as base_url, httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        body = {"model": "chat", "messages": [{"role": "user", "content": "one two"}], "stream": True}
        seen = 0
        async with http.stream("POST", "/v1/chat/completions", json=body, headers=user.headers) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                    seen += 1
                    if seen == 3:
                        break  # leaving the block closes the connection
        for _ in range(50):
            if upstream.in_flight == 0 and (rows := await usage_rows(client)):
                break
            await asyncio.sleep(0.1)
    rows = await usage_rows(client)
    assert len(rows) == 1
    row = rows[0]
    assert row.status == 499 and row.prompt_tokens == 2
    # Charged for what was streamed (3 words, maybe a few more in flight), not for 50 words.
    streamed = lambda n: count_text(" ".join(f"word{i}" for i in range(n)))  # noqa: E731
    assert streamed(3) <= row.completion_tokens <= streamed(8), row.completion_tokens
    assert row.cost_nanos == (row.prompt_tokens + row.completion_tokens) * 1_000_000_000
    assert upstream.in_flight == 0 and upstream.cancelled >= 1
    counts = await client.app.state.context.load.in_flight([provider])
    assert counts[provider] == 0  # the provider slot was given back


async def test_upstream_breaking_mid_stream_ends_with_an_error_event(client, models: Models, upstream) -> None:
    router = await models.router()
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router)
    upstream.behaviour.reply_words = 10
    upstream.behaviour.drop_after_chunks = 3
    body = {"model": "chat", "messages": [{"role": "user", "content": "x"}], "stream": True}
    response = await client.post("/v1/chat/completions", json=body, headers=user.headers)
    assert response.status_code == 200
    assert '"type": "upstream_error"' in response.text
    rows = await usage_rows(client)
    # No usage from a broken stream: what reached the client is counted with tiktoken.
    assert [(r.status, r.completion_tokens) for r in rows] == [(502, count_text("word0 word1 word2"))]
