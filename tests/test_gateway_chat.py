"""Chat completions through Tollgate with the official openai SDK, against a real HTTP fake."""

import json

import httpx
import openai
import pytest

from conftest import Models, usage_rows


def sdk(client: httpx.AsyncClient, key: str) -> openai.AsyncOpenAI:
    """The official SDK, talking HTTP to the in-process Tollgate app."""
    return openai.AsyncOpenAI(api_key=key, base_url="http://tollgate.test/v1", http_client=client, max_retries=0)


async def test_chat_completion_with_usage_cost_and_carbon(client, models: Models, upstream) -> None:
    router = await models.router("chat-model", aliases=["gpt-house"], cost_prompt_tokens=2, cost_completion_tokens=10)
    await models.provider(router, upstream.base_url, model_total_params=8, model_active_params=8, model_hosting_zone="FRA")
    user = await models.user_for(router)

    completion = await sdk(client, user.key).chat.completions.create(
        model="gpt-house", messages=[{"role": "user", "content": "one two three four"}]
    )
    assert completion.choices[0].message.content == "word0 word1 word2 word3 word4"
    usage = completion.usage.model_dump()
    assert (usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]) == (4, 5, 9)
    assert usage["cost"] == pytest.approx((4 * 2 + 5 * 10) / 1_000_000)
    assert usage["requests"] == 1
    assert 0 < usage["carbon"]["kWh"]["min"] <= usage["carbon"]["kWh"]["max"]
    assert 0 < usage["carbon"]["kgCO2eq"]["min"] <= usage["carbon"]["kgCO2eq"]["max"]
    # The provider saw its own model name, and Tollgate's key was not forwarded.
    sent = upstream.received[-1]
    assert sent.body["model"] == "fake-chat" and user.key not in json.dumps(sent.headers)

    rows = await usage_rows(client)
    assert len(rows) == 1
    row = rows[0]
    assert (row.user_id, row.router_id, row.status, row.endpoint) == (user.id, router, 200, "/v1/chat/completions")
    assert (row.prompt_tokens, row.completion_tokens, row.cost_nanos) == (4, 5, 58_000)


async def test_extra_fields_tools_and_reasoning_pass_through(client, models: Models, upstream) -> None:
    router = await models.router()
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    completion = await sdk(client, user.key).chat.completions.create(
        model="chat", messages=[{"role": "user", "content": [{"type": "text", "text": "weather?"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}],
        tools=tools, tool_choice="auto", response_format={"type": "text"}, extra_body={"top_k": 5, "chat_template_kwargs": {"thinking": True}},
    )
    call = completion.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    sent = upstream.received[-1].body
    assert sent["tools"] == tools and sent["tool_choice"] == "auto" and sent["top_k"] == 5
    assert sent["chat_template_kwargs"] == {"thinking": True} and sent["messages"][0]["content"][1]["type"] == "image_url"

    plain = await sdk(client, user.key).chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}])
    assert plain.choices[0].message.model_extra["reasoning_content"] == "thinking"


async def test_streaming_relays_chunks_and_ends_with_usage(client, models: Models, upstream) -> None:
    router = await models.router(cost_prompt_tokens=1, cost_completion_tokens=1)
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router)
    stream = await sdk(client, user.key).chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "a b c"}], stream=True
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "word0 word1 word2 word3 word4"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    usage = chunks[-1].usage.model_dump()
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (3, 5)
    assert usage["cost"] == pytest.approx(8 / 1_000_000) and "carbon" in usage
    assert upstream.received[-1].body["stream_options"] == {"include_usage": True}
    rows = await usage_rows(client)
    assert [(r.status, r.prompt_tokens, r.completion_tokens) for r in rows] == [(200, 3, 5)]
    assert rows[0].ttft_ms is not None


async def test_unknown_and_forbidden_models_and_wrong_type(client, models: Models, upstream) -> None:
    chat = await models.router("chat")
    await models.provider(chat, upstream.base_url)
    embed = await models.router("embed", type="text-embeddings-inference")
    await models.provider(embed, upstream.base_url, model_name="fake-embed")
    hidden = await models.router("hidden")
    await models.provider(hidden, upstream.base_url)
    user = await models.user_for(chat, embed)
    client_sdk = sdk(client, user.key)
    with pytest.raises(openai.NotFoundError):
        await client_sdk.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.NotFoundError):  # exists, but the role has no limit row for it
        await client_sdk.chat.completions.create(model="hidden", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError):
        await client_sdk.chat.completions.create(model="embed", messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.AuthenticationError):
        await sdk(client, "tg-wrong").chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}])

    listed = await client_sdk.models.list()
    assert sorted(m.id for m in listed.data) == ["chat", "embed"]
    one = await client_sdk.models.retrieve("embed")
    assert one.model_extra["type"] == "text-embeddings-inference"
    with pytest.raises(openai.NotFoundError):
        await client_sdk.models.retrieve("hidden")
    # Every authenticated call is accounted, refused ones included.
    rows = await usage_rows(client)
    assert sorted(r.status for r in rows) == [400, 404, 404]


async def test_upstream_4xx_passes_through(client, models: Models, upstream) -> None:
    router = await models.router()
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router)
    upstream.behaviour.fail_status = 400
    with pytest.raises(openai.BadRequestError) as error:
        await sdk(client, user.key).chat.completions.create(model="chat", messages=[{"role": "user", "content": "x"}])
    assert "injected failure 400" in str(error.value)
    assert [r.status for r in await usage_rows(client)] == [400]


async def test_bad_requests_are_422(client, models: Models, upstream) -> None:
    router = await models.router()
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router)
    for body in ({"model": "chat"}, {"model": "chat", "messages": []}, {"model": "chat", "messages": "hi"},
                 {"model": "chat", "messages": [{"content": "no role"}]}, {"messages": [{"role": "user", "content": "x"}]},
                 {"model": "chat", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}):
        response = await client.post("/v1/chat/completions", json=body, headers=user.headers)
        assert response.status_code == 422, body
    assert upstream.received == []


async def test_a_cookie_set_by_a_provider_is_not_sent_with_later_calls(client, models: Models, upstream) -> None:
    """One connection pool serves every caller: a provider's cookie (a session, a load
    balancer's stickiness) would otherwise go out with other users' calls."""
    router = await models.router()
    # By a host name: aiohttp keeps no cookies from IP addresses.
    await models.provider(router, upstream.base_url.replace("127.0.0.1", "localhost"))
    first, second = await models.user_for(router), await models.user_for(router)
    upstream.behaviour.set_cookie = "session=first-users-session; Path=/"
    body = {"model": "chat", "messages": [{"role": "user", "content": "x"}]}
    assert (await client.post("/v1/chat/completions", json=body, headers=first.headers)).status_code == 200
    assert (await client.post("/v1/chat/completions", json=body, headers=second.headers)).status_code == 200
    assert [sent.headers.get("Cookie") for sent in upstream.received] == [None, None]


async def test_overhead_header(client, models: Models, upstream) -> None:
    router = await models.router()
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router)
    upstream.behaviour.delay_seconds = 0.2
    response = await client.post("/v1/chat/completions", json={"model": "chat", "messages": [{"role": "user", "content": "x"}]}, headers=user.headers)
    assert response.status_code == 200
    # The 200 ms the upstream took are not the gateway's.
    assert 0 < float(response.headers["x-tollgate-overhead-ms"]) < 150
    assert response.headers["x-tollgate-request-id"]


async def test_fields_beyond_what_fast_json_handles_still_pass_through(client, models: Models, upstream) -> None:
    """An integer over 64 bits in a provider-specific field reaches the provider unchanged."""
    router = await models.router()
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router)
    body = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "seed": 2**70, "logit_bias": {"42": -1.5}}
    response = await client.post("/v1/chat/completions", json=body, headers=user.headers)
    assert response.status_code == 200, response.text
    assert upstream.received[-1].body["seed"] == 2**70 and upstream.received[-1].body["logit_bias"] == {"42": -1.5}
