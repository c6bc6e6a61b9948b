"""Upstream and client faults, as a table: fault -> what the client gets, whether another
provider took over, and the one usage record the request leaves.

Each upstream row runs against the fake upstream (real HTTP) on both backends. When a row has
a healthy second provider, that provider is put in cooldown first, so the faulty one is tried
first (cooling providers are tried last) and failover is observable. Faults already proven
elsewhere (500, 503, refused connections, timeouts, malformed JSON, a stream closed mid-way:
tests/test_gateway_routing.py and test_gateway_streaming.py) are not repeated here.

Token columns: `upstream` = the provider's own usage (prompt 2: "hello there", completion 5);
`streamed` = prompt counted with tiktoken, completion = tiktoken over what reached the client;
`none` = nothing charged (the call produced nothing). Every row also checks the caller's
budget reservation was settled to exactly the recorded cost.
"""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass, field
from email.utils import format_datetime
from datetime import datetime, timedelta, UTC
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import httpx
import pytest

from api.calls.tokens import count_messages, count_text
from conftest import Models, Seeder, live_server, usage_rows

MESSAGES = [{"role": "user", "content": "hello there"}]
PRICE = 1_000_000  # per million tokens: one unit (1e9 nanos) per token, so cost = tokens
MiB = 1024 * 1024


@dataclass(frozen=True)
class Row:
    fault: str
    behaviour: dict[str, Any]  # set on the faulty provider's Behaviour
    stream: bool
    with_healthy_provider: bool
    status: int  # HTTP status the client gets
    outcome: str  # "answer" (complete), "json-error", "error-event" (stream cut with an error event)
    failover: bool  # the healthy provider answered instead
    usage_status: int
    tokens: str  # "upstream" | "streamed" | "none"
    event_code: int | None = None  # the error event's code
    detail: str = ""  # part of the JSON detail or the error event's message
    gateway: dict[str, Any] = field(default_factory=dict)  # gateway settings for the row
    provider: dict[str, Any] = field(default_factory=dict)  # the faulty provider's settings
    retry_after: str | None = None  # Retry-After the client must get


ROWS = [
    # Row(fault, behaviour, stream, with_healthy_provider,
    #     client status, outcome, failover, usage status, tokens, [event code, detail, settings...])
    #
    # 429 from a provider is its own rate limit: another provider may take the call; alone, the
    # client gets 429 with the provider's Retry-After (not a 502: nothing is broken).
    Row("429 + Retry-After, another provider", {"fail_status": 429, "retry_after": "7"}, False, True,
        200, "answer", True, 200, "upstream"),
    Row("429 + Retry-After, another provider, streamed", {"fail_status": 429, "retry_after": "7"}, True, True,
        200, "answer", True, 200, "upstream"),
    Row("429 + Retry-After, only provider", {"fail_status": 429, "retry_after": "7"}, False, False,
        429, "json-error", False, 429, "none", detail="rate-limited", retry_after="7"),
    Row("429 + Retry-After, only provider, streamed", {"fail_status": 429, "retry_after": "7"}, True, False,
        429, "json-error", False, 429, "none", detail="rate-limited", retry_after="7"),
    Row("429 with a 400-digit Retry-After, only provider", {"fail_status": 429, "retry_after": "9" * 400}, False, False,
        429, "json-error", False, 429, "none", detail="rate-limited", retry_after="86400"),
    Row("429 without Retry-After, only provider", {"fail_status": 429}, False, False,
        429, "json-error", False, 429, "none", detail="rate-limited", gateway={"cooldown_seconds": 3}, retry_after="3"),
    # Reset (RST) rather than an orderly close.
    Row("connection reset before answering", {"reset_connection": True}, False, True,
        200, "answer", True, 200, "upstream"),
    Row("connection reset mid-stream", {"reset_after_chunks": 2}, True, True,
        200, "error-event", False, 502, "streamed", event_code=502, detail="broke off"),
    # After the headers, before the first event (the provider "processing the prompt"): not one
    # byte has reached the client, so another provider can still take the call.
    Row("stream reset after its headers, before its first event", {"reset_before_first_event": True}, True, True,
        200, "answer", True, 200, "upstream"),
    Row("only provider silent after its headers, past its timeout", {"first_event_delay_seconds": 1.5}, True, False,
        504, "json-error", False, 504, "none", detail="timed out", provider={"timeout": 1}),
    # Headers and first chunks in time, then silence longer than the provider's timeout.
    Row("provider goes quiet mid-stream", {"chunk_delay_seconds": 1.5}, True, True,
        200, "error-event", False, 504, "streamed", event_code=504, detail="went quiet", provider={"timeout": 1}),
    # Malformed SSE: the headers are gone, so the stream is cut with one clear error event.
    Row("SSE `data:` line that is not JSON", {"bad_event_after_chunks": 2}, True, True,
        200, "error-event", False, 502, "streamed", event_code=502, detail="not a JSON object"),
    Row("the provider's own error event mid-stream", {"error_event_after_chunks": 2}, True, True,
        200, "error-event", False, 502, "streamed", event_code=502, detail="reported an error: injected stream failure"),
    Row("SSE events after [DONE]", {"junk_after_done": True}, True, True,
        200, "answer", False, 200, "upstream"),
    Row("SSE stream ends without [DONE] (after its finish_reason)", {"omit_done": True}, True, True,
        200, "answer", False, 200, "upstream"),
    Row("SSE stream ends without [DONE] nor finish_reason", {"omit_done": True, "omit_finish": True}, True, True,
        200, "error-event", False, 502, "streamed", event_code=502, detail="ended before its last chunk"),
    # A provider that never stops: bounded by size and by duration.
    Row("endless stream, over max_response_bytes", {"endless": True}, True, True,
        200, "error-event", False, 502, "streamed", event_code=502, detail="larger than 65536 bytes",
        gateway={"max_response_bytes": 64 * 1024}),
    Row("endless stream, over max_stream_seconds", {"endless": True, "chunk_delay_seconds": 0.02}, True, True,
        200, "error-event", False, 504, "streamed", event_code=504, detail="lasted longer",
        gateway={"max_stream_seconds": 0.5}),
    # 10 MB answers: relayed within the limit (default 64 MiB), refused past it, read no further.
    Row("10 MB answer, within max_response_bytes", {"reply_bytes": 10_000_000}, False, True,
        200, "answer", False, 200, "upstream"),
    Row("10 MB answer over max_response_bytes (Content-Length)", {"reply_bytes": 10_000_000}, False, True,
        502, "json-error", False, 502, "none", detail="larger than 1048576 bytes", gateway={"max_response_bytes": MiB}),
    Row("10 MB answer over max_response_bytes (chunked)", {"reply_bytes": 10_000_000, "chunked_body": True}, False, True,
        502, "json-error", False, 502, "none", detail="larger than 1048576 bytes", gateway={"max_response_bytes": MiB}),
]


def markdown_table() -> str:
    """The table above, as docs/security.md shows it (`python tests/test_faults.py`)."""
    lines = ["| fault | streamed | client gets | failover | usage status, tokens |", "|---|---|---|---|---|"]
    for row in ROWS:
        gets = {"answer": f"{row.status}, complete answer", "json-error": f"{row.status} JSON",
                "error-event": f"{row.status}, stream ends with an error event ({row.event_code})"}[row.outcome]
        if row.retry_after:
            gets += f", Retry-After {row.retry_after}"
        failover = "yes" if row.failover else ("no" if row.with_healthy_provider else "nothing to try")
        lines.append(f"| {row.fault} | {'yes' if row.stream else 'no'} | {gets} | {failover} | {row.usage_status}, {row.tokens} |")
    return "\n".join(lines)


def sse_events(text: str) -> list[Any]:
    """The JSON events of an SSE body, and "[DONE]"."""
    events: list[Any] = []
    for line in text.splitlines():
        if line.startswith("data: "):
            data = line[6:]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def streamed_text(events: list[Any]) -> str:
    return "".join(
        choice["delta"].get("content") or ""
        for event in events if isinstance(event, dict)
        for choice in event.get("choices", [])
    )


@pytest.mark.parametrize("row", ROWS, ids=[row.fault for row in ROWS])
async def test_upstream_fault(row: Row, app_factory, upstream, second_upstream) -> None:
    client = await app_factory(gateway=row.gateway) if row.gateway else await app_factory()
    models = Models(client, Seeder(client))
    router = await models.router(cost_prompt_tokens=PRICE, cost_completion_tokens=PRICE)
    await models.provider(router, upstream.base_url, **row.provider)
    if row.with_healthy_provider:
        healthy = await models.provider(router, second_upstream.base_url)
        await client.app.state.context.load.cool_down(healthy, 60)  # tried last: the faulty one goes first
    budget = 10_000_000  # units (one a token): room for every row, so its settlement shows
    user = await models.user_for(router, budget=budget)
    for name, value in row.behaviour.items():
        setattr(upstream.behaviour, name, value)

    body = {"model": "chat", "messages": MESSAGES, "stream": row.stream}
    response = await client.post("/v1/chat/completions", json=body, headers=user.headers)

    # What the client gets.
    assert response.status_code == row.status, response.text[:500]
    events: list[Any] = []
    if row.outcome == "json-error":
        assert response.headers["content-type"] == "application/json"
        assert row.detail in response.json()["detail"]
        if row.retry_after is not None:
            assert response.headers["retry-after"] == row.retry_after
    elif row.stream:
        events = sse_events(response.text)
        if row.outcome == "answer":
            assert events[-1] == "[DONE]" and events[-2]["usage"]["total_tokens"] > 0
            assert events.count("[DONE]") == 1 and response.text.endswith("data: [DONE]\n\n")
        else:
            assert events[-1]["error"]["code"] == row.event_code and row.detail in events[-1]["error"]["message"]
            assert "[DONE]" not in events
    else:
        answer = response.json()
        assert answer["usage"]["completion_tokens"] > 0
        if "reply_bytes" in row.behaviour:
            assert len(answer["choices"][0]["message"]["content"]) >= 9_000_000  # relayed whole

    # Failover.
    assert len(upstream.received) == 1  # the faulty provider was tried first, once
    assert len(second_upstream.received) == (1 if row.failover else 0)
    # Nothing lingers: the faulty provider's call is over (an endless stream was hung up on).
    for _ in range(50):
        if upstream.in_flight == 0:
            break
        await asyncio.sleep(0.1)
    assert upstream.in_flight == 0

    # Exactly one usage record, with the right status and tokens.
    rows = await usage_rows(client)
    assert len(rows) == 1
    record = rows[0]
    assert record.status == row.usage_status
    if row.tokens == "upstream":
        # A 10 MB answer is 1,111,111 tokens, past the `max_tokens` the gateway sent (its default,
        # for a budgeted user): the call is charged no more than the bound it reserved for.
        bound = client.app.state.context.settings.settings.gateway.default_max_tokens
        completion = bound if "reply_bytes" in row.behaviour else 5
        assert (record.prompt_tokens, record.completion_tokens) == (2, completion)
    elif row.tokens == "streamed":
        assert record.prompt_tokens == count_messages(MESSAGES)
        assert record.completion_tokens == count_text(streamed_text(events))
    else:
        assert (record.prompt_tokens, record.completion_tokens) == (0, 0)
    assert record.cost_nanos == record.total_tokens * 1_000_000_000  # charged exactly its tokens
    # The budget reservation was settled to that cost, whatever the fault.
    assert await client.app.state.context.budgets.balance(str(user.id)) == budget * 1_000_000_000 - record.cost_nanos


async def test_a_429_retry_after_cools_the_provider_down_for_that_long(app_factory, upstream, second_upstream) -> None:
    # cooldown_seconds 0: only the provider's Retry-After can keep it out of rotation.
    client = await app_factory(gateway={"cooldown_seconds": 0})
    models = Models(client, Seeder(client))
    router = await models.router()
    limited = await models.provider(router, upstream.base_url)
    healthy = await models.provider(router, second_upstream.base_url)
    user = await models.user_for(router)
    upstream.behaviour.fail_status, upstream.behaviour.retry_after = 429, "60"
    tracker = client.app.state.context.load
    body = {"model": "chat", "messages": MESSAGES}
    await tracker.cool_down(healthy, 0.2)  # so the limited one is tried first, once
    assert (await client.post("/v1/chat/completions", json=body, headers=user.headers)).status_code == 200
    assert (len(upstream.received), len(second_upstream.received)) == (1, 1)
    await asyncio.sleep(0.3)  # the healthy one's cooldown is over; the limited one's 60 s are not
    for _ in range(9):
        assert (await client.post("/v1/chat/completions", json=body, headers=user.headers)).status_code == 200
    # Without its Retry-After honoured, the limited provider would have been picked about half the time.
    assert (len(upstream.received), len(second_upstream.received)) == (1, 10)
    assert await tracker.cooling([limited, healthy]) == {limited}
    assert [r.status for r in await usage_rows(client)] == [200] * 10


async def test_a_429_with_an_http_date_retry_after(client, models: Models, upstream) -> None:
    router = await models.router()
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router)
    upstream.behaviour.fail_status = 429
    upstream.behaviour.retry_after = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    response = await client.post("/v1/chat/completions", json={"model": "chat", "messages": MESSAGES}, headers=user.headers)
    assert response.status_code == 429
    assert 1 <= int(response.headers["retry-after"]) <= 30
    assert [r.status for r in await usage_rows(client)] == [429]


# Answers that are valid JSON of the wrong shape, on each JSON endpoint: treated like malformed
# JSON (another provider is tried; alone, 502), never an exception deep in the accounting (500).
SHAPES = [  # (endpoint, router type, provider type, model name, body)
    ("/v1/chat/completions", "text-generation", "vllm", "fake-chat", {"messages": MESSAGES}),
    ("/v1/embeddings", "text-embeddings-inference", "vllm", "fake-embed", {"input": "hello there"}),
    ("/v1/rerank", "text-classification", "vllm", "fake-chat", {"query": "hello", "documents": ["hello there", "x"], "top_n": 1}),
    ("/v1/rerank", "text-classification", "tei", "fake-chat", {"query": "hello", "documents": ["hello there", "x"]}),
]


@pytest.mark.parametrize("alone", [True, False], ids=["only provider", "another provider"])
@pytest.mark.parametrize(("path", "router_type", "provider_type", "model_name", "body"), SHAPES,
                         ids=[f"{s[0]} ({s[2]})" for s in SHAPES])
async def test_an_answer_of_the_wrong_shape(
    client, models: Models, upstream, second_upstream, alone, path, router_type, provider_type, model_name, body
) -> None:
    router = await models.router("model", type=router_type)
    await models.provider(router, upstream.base_url, model_name=model_name, type=provider_type)
    if not alone:
        healthy = await models.provider(router, second_upstream.base_url, model_name=model_name, type=provider_type)
        await client.app.state.context.load.cool_down(healthy, 60)  # tried last
    user = await models.user_for(router)
    upstream.behaviour.wrong_shape = True
    probes = len(second_upstream.received)  # embeddings and TEI providers are probed when added
    response = await client.post(path, json={"model": "model", **body}, headers=user.headers)
    if alone:
        assert response.status_code == 502 and "unexpected shape" in response.json()["detail"]
    else:
        assert response.status_code == 200 and len(second_upstream.received) == probes + 1
    assert [r.status for r in await usage_rows(client)] == [502 if alone else 200]


# Client faults


async def test_client_disconnect_releases_the_slot_and_the_budget_reservation(client, models: Models, upstream) -> None:
    # least_busy: the provider's in-flight count is shared, so its release can be read back.
    router = await models.router(cost_prompt_tokens=PRICE, cost_completion_tokens=PRICE, load_balancing_strategy="least_busy")
    provider = await models.provider(router, upstream.base_url)
    # A call reserves its prompt bound (see api/quota/budget_holds.py) + max_tokens, one unit a
    # token. The budget holds one reservation and a little, never two at once.
    reservation = int(count_messages(MESSAGES) * 1.25) + 16 + 100
    user = await models.user_for(router, budget=reservation + 60)
    budget = (reservation + 60) * 1_000_000_000
    upstream.behaviour.reply_words = 50
    upstream.behaviour.chunk_delay_seconds = 0.1
    context = client.app.state.context
    body = {"model": "chat", "messages": MESSAGES, "max_tokens": 100}
    async with live_server(client) as base_url, httpx.AsyncClient(base_url=base_url, timeout=30) as http:
        async with http.stream("POST", "/v1/chat/completions", json={**body, "stream": True}, headers=user.headers) as response:
            assert response.status_code == 200
            seen = 0
            async for line in response.aiter_lines():
                if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                    seen += 1
                    if seen == 3:
                        # Mid-stream the reservation is held: a second call does not fit beside it.
                        second = await client.post("/v1/chat/completions", json=body, headers=user.headers)
                        assert second.status_code == 402
                        break  # leaving the block closes the connection
        for _ in range(50):
            if upstream.in_flight == 0 and len(await usage_rows(client)) == 2:
                break
            await asyncio.sleep(0.1)
    rows = await usage_rows(client)
    assert sorted(r.status for r in rows) == [402, 499]
    disconnected = next(r for r in rows if r.status == 499)
    assert 3 <= disconnected.completion_tokens < 50  # charged what was streamed
    assert (await context.load.in_flight([provider]))[provider] == 0  # the provider slot is back
    # The reservation was settled to what was streamed: the rest of the budget is free again.
    assert await context.budgets.balance(str(user.id)) == budget - disconnected.cost_nanos
    upstream.behaviour.chunk_delay_seconds = 0
    assert (await client.post("/v1/chat/completions", json=body, headers=user.headers)).status_code == 200


async def _stalled(upstream, total: int) -> bool:
    """Whether the provider's stream stopped advancing before its end: it is waiting for the
    gateway to read, which waits for the client. (The loop runs meanwhile, so the provider would
    advance if anything downstream read.) Gives up after ~30 s."""
    for _ in range(60):
        before = upstream.chunks_sent
        await asyncio.sleep(0.5)
        if upstream.chunks_sent == before and 0 < before < total:
            return True
    return False


async def test_a_slow_reader_does_not_hold_up_other_requests(client, models: Models, upstream) -> None:
    router = await models.router()
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router)
    words = 100_000  # ~22 MB of events: more than all the kernel buffers on the way can hold
    upstream.behaviour.reply_words = words
    body = {"model": "chat", "messages": MESSAGES, "stream": True}
    async with live_server(client) as base_url, httpx.AsyncClient(base_url=base_url, timeout=60) as http:
        # The slow client: raw HTTP with a small receive buffer, reading nothing after the status.
        parts = urlsplit(base_url)
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, (parts.hostname, parts.port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
        payload = json.dumps(body).encode()
        writer.write(
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: tollgate\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {user.key}\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
            + payload
        )
        assert (await reader.readline()).startswith(b"HTTP/1.1 200")
        # Backpressure reaches the provider: the gateway does not buffer the answer for the client.
        assert await _stalled(upstream, words)
        # Meanwhile others are served, streamed or not.
        upstream.behaviour.reply_words = 5
        others = await asyncio.gather(*(
            http.post("/v1/chat/completions", json={**body, "stream": bool(i % 2)}, headers=user.headers)
            for i in range(20)
        ))
        assert [r.status_code for r in others] == [200] * 20
        # The slow reader gets the whole answer in the end.
        raw = bytearray()
        while block := await reader.read(256 * 1024):
            raw += block
        writer.close()
    assert b"data: [DONE]" in raw[-200:]
    rows = await usage_rows(client)
    assert sorted(r.completion_tokens for r in rows) == [5] * 20 + [words]
    assert [r.status for r in rows] == [200] * 21


async def test_a_thousand_concurrent_streams(client, models: Models, upstream) -> None:
    router = await models.router()
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router)
    upstream.behaviour.reply_words = 3
    upstream.log_requests = False
    body = {"model": "chat", "messages": MESSAGES, "stream": True}
    # Real HTTP, 1,000 connections open at once. The clients are aiohttp's: httpx's connection
    # pool spends most of a 1,000-connection run on itself (~7× slower), which is not under test.
    connector = aiohttp.TCPConnector(limit=1000)
    async with live_server(client) as base_url, aiohttp.ClientSession(base_url, connector=connector) as http:

        async def one() -> str:
            async with http.post("/v1/chat/completions", json=body, headers=user.headers,
                                 timeout=aiohttp.ClientTimeout(total=120)) as response:
                assert response.status == 200
                return b"".join([chunk async for chunk in response.content.iter_any()]).decode()

        answers = await asyncio.gather(*(one() for _ in range(1000)))
    for answer in answers:
        events = sse_events(answer)
        assert events[-1] == "[DONE]" and streamed_text(events) == "word0 word1 word2"
    rows = await usage_rows(client)
    assert len(rows) == 1000
    assert {(r.status, r.prompt_tokens, r.completion_tokens) for r in rows} == {(200, 2, 3)}


if __name__ == "__main__":
    print(markdown_table())
