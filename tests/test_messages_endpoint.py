"""`POST /v1/messages`: Anthropic's SDK, unmodified, against Tollgate (any chat router, here an
OpenAI-compatible fake behind it): text, streams, tools, images, and refusals in Anthropic's
error shape."""

from __future__ import annotations

import base64

import anthropic
import httpx
import httpx2
import pytest

from conftest import Models, Seeder, usage_rows
from fakes.anthropic import CLAUDE_MODEL

WEATHER = {"name": "weather", "description": "The weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}


def claude_sdk(client: httpx.AsyncClient, key: str) -> anthropic.AsyncAnthropic:
    """Anthropic's SDK, talking HTTP to the in-process Tollgate app (its own httpx fork's client)."""
    transport = httpx2.ASGITransport(app=client.app)  # type: ignore[attr-defined]
    http = httpx2.AsyncClient(transport=transport, base_url="http://tollgate.test")
    return anthropic.AsyncAnthropic(api_key=key, base_url="http://tollgate.test", http_client=http, max_retries=0)


async def test_a_text_answer(client, models: Models, upstream) -> None:
    router = await models.router(cost_prompt_tokens=1, cost_completion_tokens=1)
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router)
    answer = await claude_sdk(client, user.key).messages.create(
        model="chat", max_tokens=50, system="be brief", messages=[{"role": "user", "content": "one two three"}],
        stop_sequences=["never"], metadata={"user_id": "end-user-7"})
    assert answer.type == "message" and answer.role == "assistant" and answer.model == "chat"
    assert answer.content[0].type == "text" and answer.content[0].text == "word0 word1 word2 word3 word4"
    assert answer.stop_reason == "end_turn"
    assert (answer.usage.input_tokens, answer.usage.output_tokens) == (5, 5)
    sent = upstream.received[-1].body
    assert sent["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "one two three"}]
    assert sent["max_tokens"] == 50 and sent["stop"] == ["never"]
    row = (await usage_rows(client))[-1]
    assert (row.endpoint, row.status, row.prompt_tokens, row.completion_tokens, row.end_user) == (
        "/v1/messages", 200, 5, 5, "end-user-7")


async def test_a_streamed_answer(client, models: Models, upstream) -> None:
    router = await models.router()
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router)
    async with claude_sdk(client, user.key).messages.stream(
            model="chat", max_tokens=3, messages=[{"role": "user", "content": "one two"}]) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text == "word0 word1 word2" and final.content[0].text == text
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 3  # the fake says "stop" when bounded
    row = (await usage_rows(client))[-1]
    assert (row.endpoint, row.status, row.completion_tokens) == ("/v1/messages", 200, 3)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_tool_call_round_trip_through_an_anthropic_provider(client, models: Models, claude, stream: bool) -> None:
    """Anthropic's protocol on both sides: translated to a chat call and back, twice."""
    router = await models.router()
    await models.provider(router, claude.base_url, type="anthropic", model_name=CLAUDE_MODEL, key=claude.api_key)
    user = await models.user_for(router)
    sdk = claude_sdk(client, user.key)
    question = [{"role": "user", "content": "weather in Paris?"}]
    if stream:
        async with sdk.messages.stream(model="chat", max_tokens=100, messages=question, tools=[WEATHER],
                                       tool_choice={"type": "any"}) as events:
            first = await events.get_final_message()
    else:
        first = await sdk.messages.create(model="chat", max_tokens=100, messages=question, tools=[WEATHER],
                                          tool_choice={"type": "any"})
    use = next(block for block in first.content if block.type == "tool_use")
    assert first.stop_reason == "tool_use" and use.name == "weather" and use.input == {"city": "Paris"}
    sent = claude.received[-1].body
    assert sent["tools"][0]["input_schema"] == WEATHER["input_schema"] and sent["tool_choice"] == {"type": "any"}
    final = await sdk.messages.create(model="chat", max_tokens=100, tools=[WEATHER], messages=[
        *question, {"role": "assistant", "content": [block.model_dump() for block in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]}])
    assert final.content[0].text == "the tool said sunny"
    sent = claude.received[-1].body["messages"]
    assert sent[1]["content"][-1] == {"type": "tool_use", "id": use.id, "name": "weather", "input": {"city": "Paris"}}
    assert sent[2] == {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]}


async def test_an_image(client, models: Models, upstream) -> None:
    router = await models.router(type="image-text-to-text")
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router)
    data = base64.b64encode(b"\x89PNG an image").decode()
    answer = await claude_sdk(client, user.key).messages.create(model="chat", max_tokens=20, messages=[{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}},
        {"type": "text", "text": "what is it?"}]}])
    assert answer.content[0].text.startswith("read image")
    part = upstream.received[-1].body["messages"][0]["content"][0]
    assert part == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{data}"}}


async def test_limits_budgets_and_errors_in_anthropics_shape(client, models: Models, upstream) -> None:
    router = await models.router(cost_prompt_tokens=1, cost_completion_tokens=1)
    await models.provider(router, upstream.base_url)
    broke = await models.user_for(router, budget=0)
    with pytest.raises(anthropic.APIStatusError) as error:
        await claude_sdk(client, broke.key).messages.create(model="chat", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert error.value.status_code == 402 and error.value.body["type"] == "error"
    assert error.value.body["error"]["type"] == "billing_error" and "budget" in error.value.body["error"]["message"]
    limited = await models.user_for(router, limits={"rpm": 1})
    sdk = claude_sdk(client, limited.key)
    await sdk.messages.create(model="chat", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.RateLimitError) as refused:
        await sdk.messages.create(model="chat", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert refused.value.body["error"]["type"] == "rate_limit_error" and refused.value.response.headers["retry-after"]
    with pytest.raises(anthropic.AuthenticationError) as unknown_key:
        await claude_sdk(client, "sk-wrong").messages.create(model="chat", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert unknown_key.value.body["error"]["type"] == "authentication_error"
    with pytest.raises(anthropic.NotFoundError):
        await sdk.messages.create(model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    invalid = await client.post("/v1/messages", headers={"x-api-key": limited.key}, json={"model": "chat", "messages": []})
    assert invalid.status_code == 400 and invalid.json()["error"]["type"] == "invalid_request_error"
    not_json = await client.post("/v1/messages", headers={"x-api-key": limited.key}, content=b"{nope")
    assert not_json.status_code == 400 and not_json.json()["type"] == "error"
    upstream.behaviour.fail_status = 400  # the provider's own refusal keeps its status
    with pytest.raises(anthropic.BadRequestError) as rejected:
        await claude_sdk(client, (await models.user_for(router)).key).messages.create(
            model="chat", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert rejected.value.body["error"]["message"] == "injected failure 400"


async def test_a_body_over_the_limit_is_refused_in_anthropics_shape(app_factory, upstream) -> None:
    client = await app_factory(max_request_body_bytes=2048)
    models = Models(client, Seeder(client))
    router = await models.router()
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router)
    with pytest.raises(anthropic.APIStatusError) as error:
        await claude_sdk(client, user.key).messages.create(
            model="chat", max_tokens=5, messages=[{"role": "user", "content": "x" * 4096}])
    assert error.value.status_code == 413
    assert error.value.body == {"type": "error", "error": {"type": "request_too_large",
                                                           "message": "Request body is larger than 2048 bytes"}}
    # The OpenAI-shaped routes keep theirs.
    refused = await client.post("/v1/chat/completions", headers=user.headers,
                                json={"model": "chat", "messages": [{"role": "user", "content": "x" * 4096}]})
    assert refused.status_code == 413 and refused.json() == {"detail": "Request body is larger than 2048 bytes"}
