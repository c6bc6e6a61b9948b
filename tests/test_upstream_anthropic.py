"""An `anthropic` provider: OpenAI chat completions in front, Anthropic's Messages API behind
(a fake speaking its wire protocol over HTTP): text, streams, tools, images, stops, errors,
failover and usage."""

from __future__ import annotations

import base64
import hashlib
import openai
import pytest

from conftest import ADMIN, Models, usage_rows
from fakes.anthropic import CLAUDE_MODEL, FakeAnthropic
from test_gateway_chat import sdk

WEATHER = {"type": "function", "function": {"name": "weather", "description": "The weather in a city",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


async def anthropic_router(models: Models, *fakes: FakeAnthropic, **router: object) -> int:
    router_id = await models.router("claude", **router)
    for fake in fakes:
        await models.provider(router_id, fake.base_url, type="anthropic", model_name=CLAUDE_MODEL, key=fake.api_key)
    return router_id


async def test_a_chat_goes_out_as_a_messages_call_and_comes_back_as_a_completion(client, models: Models, claude) -> None:
    router = await anthropic_router(models, claude, cost_prompt_tokens=1, cost_completion_tokens=2)
    user = await models.user_for(router)
    completion = await sdk(client, user.key).chat.completions.create(
        model="claude", messages=[{"role": "system", "content": "you are terse"}, {"role": "user", "content": "hi there"},
                                  {"role": "assistant", "content": "hello"}, {"role": "user", "content": "one two three"}],
        temperature=0.2,
    )
    assert completion.choices[0].message.content == "word0 word1 word2 word3 word4"
    assert completion.choices[0].finish_reason == "stop"
    sent = claude.received[-1]
    assert sent.headers["x-api-key"] == claude.api_key and sent.headers["anthropic-version"] == "2023-06-01"
    assert sent.body["system"] == "you are terse" and [m["role"] for m in sent.body["messages"]] == ["user", "assistant", "user"]
    assert sent.body["max_tokens"] == 4096 and sent.body["temperature"] == 0.2 and sent.body["model"] == CLAUDE_MODEL
    # input 6 + the cache's 3 (the system prompt, read from the cache) = 9 prompt tokens.
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (9, 5)
    row = (await usage_rows(client))[-1]
    assert (row.status, row.prompt_tokens, row.completion_tokens, row.cost_nanos) == (200, 9, 5, 19_000)


async def test_a_stream_of_anthropic_events_arrives_as_openai_chunks(client, models: Models, claude) -> None:
    router = await anthropic_router(models, claude)
    user = await models.user_for(router)
    stream = await sdk(client, user.key).chat.completions.create(
        model="claude", messages=[{"role": "system", "content": "be kind"}, {"role": "user", "content": "one two"}],
        stream=True, max_tokens=3,
    )
    chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "word0 word1 word2"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]
    assert chunks[-1].usage.prompt_tokens == 4 and chunks[-1].usage.completion_tokens == 3
    assert claude.received[-1].body["stream"] is True and claude.received[-1].body["max_tokens"] == 3
    row = (await usage_rows(client))[-1]
    assert (row.status, row.prompt_tokens, row.completion_tokens) == (200, 4, 3)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_tool_call_round_trip(client, models: Models, claude, stream: bool) -> None:
    router = await anthropic_router(models, claude)
    user = await models.user_for(router)
    openai_client = sdk(client, user.key)
    messages: list[dict] = [{"role": "user", "content": "weather in Paris?"}]
    if stream:
        chunks = [c async for c in await openai_client.chat.completions.create(
            model="claude", messages=messages, tools=[WEATHER], tool_choice="required", stream=True)]
        calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or []]
        call_id, name = calls[0].id, calls[0].function.name
        arguments = "".join(call.function.arguments or "" for call in calls)
        assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    else:
        answer = await openai_client.chat.completions.create(model="claude", messages=messages, tools=[WEATHER],
                                                             tool_choice="required")
        call = answer.choices[0].message.tool_calls[0]
        call_id, name, arguments = call.id, call.function.name, call.function.arguments
        assert answer.choices[0].finish_reason == "tool_calls"
    assert (call_id, name) == ("toolu_01", "weather") and arguments == '{"city": "Paris"}'
    sent = claude.received[-1].body
    assert sent["tools"][0]["input_schema"]["properties"] == {"city": {"type": "string"}}
    assert sent["tool_choice"] == {"type": "any"}
    messages += [{"role": "assistant", "content": None, "tool_calls": [
                     {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]},
                 {"role": "tool", "tool_call_id": call_id, "content": "sunny"}]
    final = await openai_client.chat.completions.create(model="claude", messages=messages, tools=[WEATHER])
    assert final.choices[0].message.content == "the tool said sunny"
    sent = claude.received[-1].body["messages"]
    assert sent[1]["content"][0] == {"type": "tool_use", "id": "toolu_01", "name": "weather", "input": {"city": "Paris"}}
    assert sent[2] == {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": "sunny"}]}


async def test_images_go_as_base64_sources(client, models: Models, claude) -> None:
    router = await anthropic_router(models, claude)
    user = await models.user_for(router)
    data = base64.b64encode(b"\x89PNG fake image").decode()
    answer = await sdk(client, user.key).chat.completions.create(model="claude", messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}]}])
    assert answer.choices[0].message.content == f"read image image/png {hashlib.sha256(data.encode()).hexdigest()[:12]}"
    block = claude.received[-1].body["messages"][0]["content"][1]
    assert block == {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}


async def test_stop_sequences(client, models: Models, claude) -> None:
    router = await anthropic_router(models, claude)
    user = await models.user_for(router)
    answer = await sdk(client, user.key).chat.completions.create(model="claude", messages=[{"role": "user", "content": "go"}],
                                                                 stop="word2")
    assert answer.choices[0].message.content == "word0 word1" and answer.choices[0].finish_reason == "stop"
    assert claude.received[-1].body["stop_sequences"] == ["word2"]


async def test_a_4xx_is_the_clients_with_its_status(client, models: Models, claude, second_claude) -> None:
    router = await anthropic_router(models, claude, second_claude)
    user = await models.user_for(router)
    claude.behaviour.fail_status = second_claude.behaviour.fail_status = 400
    with pytest.raises(openai.BadRequestError) as error:
        await sdk(client, user.key).chat.completions.create(model="claude", messages=[{"role": "user", "content": "x"}])
    assert error.value.body["message"] == "injected failure 400" and error.value.body["type"] == "invalid_request_error"
    assert len(claude.received) + len(second_claude.received) == 1  # not failed over
    assert (await usage_rows(client))[-1].status == 400


@pytest.mark.parametrize("status", [429, 529, 500])
@pytest.mark.parametrize("stream", [False, True])
async def test_429_and_5xx_fail_over(client, models: Models, claude, second_claude, status: int, stream: bool) -> None:
    router = await anthropic_router(models, claude, second_claude)
    user = await models.user_for(router)
    await client.app.state.context.load.cool_down(
        next(p.id for p in client.app.state.context.catalog.get(router).providers if p.url == second_claude.base_url), 60)
    claude.behaviour.fail_status = status
    body = {"model": "claude", "messages": [{"role": "user", "content": "x"}], "stream": stream}
    response = await client.post("/v1/chat/completions", json=body, headers=user.headers)
    assert response.status_code == 200 and "word4" in response.text
    assert len(claude.received) == 1 and len(second_claude.received) == 1


async def test_the_provider_is_checked_with_its_model_list(client, models: Models, claude) -> None:
    router = await models.router("claude")
    bad = await client.post("/v1/admin/providers", headers=ADMIN, json={
        "router": router, "type": "anthropic", "url": claude.base_url, "model_name": CLAUDE_MODEL, "key": "wrong"})
    assert bad.status_code == 400 and "401" in bad.json()["detail"]
    absent = await client.post("/v1/admin/providers", headers=ADMIN, json={
        "router": router, "type": "anthropic", "url": claude.base_url, "model_name": "claude-none", "key": claude.api_key})
    assert absent.status_code == 400 and "claude-none" in absent.json()["detail"]
    embeddings = await models.router("embed", type="text-embeddings-inference")
    refused = await client.post("/v1/admin/providers", headers=ADMIN, json={
        "router": embeddings, "type": "anthropic", "url": claude.base_url, "model_name": CLAUDE_MODEL, "key": claude.api_key})
    assert refused.status_code == 400
