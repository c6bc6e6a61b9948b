"""A `bedrock` provider: OpenAI chat completions in front, Bedrock's Converse and ConverseStream
behind (a fake that verifies each SigV4 signature with botocore and streams AWS event-stream
frames): text, streams, tools, images, documents, errors, failover, usage and credentials."""

from __future__ import annotations

import base64
import hashlib
import openai
import pytest

from conftest import ADMIN, Models, usage_rows
from fakes.bedrock import ACCESS_KEY, BEDROCK_MODEL, REGION, SECRET_KEY, FakeBedrock
from test_faults import sse_events
from test_gateway_chat import sdk

KEY = f"{ACCESS_KEY}:{SECRET_KEY}"
WEATHER = {"type": "function", "function": {"name": "weather", "description": "The weather",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}


async def bedrock_router(models: Models, *fakes: FakeBedrock, key: str | None = KEY) -> int:
    router = await models.router("claude", cost_prompt_tokens=1, cost_completion_tokens=1)
    for fake in fakes:
        extra = {"key": key} if key else {}
        await models.provider(router, fake.base_url, type="bedrock", model_name=BEDROCK_MODEL, region=REGION, **extra)
    return router


async def test_a_signed_converse_call(client, models: Models, bedrock) -> None:
    router = await bedrock_router(models, bedrock)
    user = await models.user_for(router)
    checked = bedrock.signatures_checked
    answer = await sdk(client, user.key).chat.completions.create(
        model="claude", messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "one two three"}],
        max_tokens=3, temperature=0, stop=["never"])
    assert answer.choices[0].message.content == "word0 word1 word2" and answer.choices[0].finish_reason == "length"
    assert bedrock.signatures_checked == checked + 1  # and it matched
    sent = bedrock.received[-1]
    assert sent.path == f"/model/{BEDROCK_MODEL}/converse"
    assert sent.body["system"] == [{"text": "be brief"}] and sent.body["messages"] == [
        {"role": "user", "content": [{"text": "one two three"}]}]
    assert sent.body["inferenceConfig"] == {"maxTokens": 3, "temperature": 0, "stopSequences": ["never"]}
    # 3 input tokens and 2 read from the cache (the system prompt): 5 prompt tokens.
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (5, 3)
    row = (await usage_rows(client))[-1]
    assert (row.status, row.prompt_tokens, row.completion_tokens) == (200, 5, 3)


async def test_a_converse_stream_arrives_as_openai_chunks(client, models: Models, bedrock) -> None:
    router = await bedrock_router(models, bedrock)
    user = await models.user_for(router)
    chunks = [c async for c in await sdk(client, user.key).chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "one two"}], stream=True)]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "word0 word1 word2 word3 word4"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (2, 5)
    assert bedrock.received[-1].path.endswith("/converse-stream")
    row = (await usage_rows(client))[-1]
    assert (row.status, row.prompt_tokens, row.completion_tokens) == (200, 2, 5)


async def test_a_corrupt_frame_ends_the_stream_with_an_error(client, models: Models, bedrock) -> None:
    router = await bedrock_router(models, bedrock)
    user = await models.user_for(router)
    bedrock.behaviour.bad_event_after_chunks = 3
    response = await client.post("/v1/chat/completions", headers=user.headers,
                                 json={"model": "claude", "messages": [{"role": "user", "content": "x"}], "stream": True})
    events = sse_events(response.text)
    assert events[-1]["error"]["code"] == 502
    assert (await usage_rows(client))[-1].status == 502


@pytest.mark.parametrize("stream", [False, True])
async def test_a_tool_call_round_trip(client, models: Models, bedrock, stream: bool) -> None:
    router = await bedrock_router(models, bedrock)
    user = await models.user_for(router)
    openai_client = sdk(client, user.key)
    messages: list[dict] = [{"role": "user", "content": "weather?"}]
    if stream:
        chunks = [c async for c in await openai_client.chat.completions.create(
            model="claude", messages=messages, tools=[WEATHER], tool_choice="required", stream=True)]
        calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or []]
        call_id, name, arguments = calls[0].id, calls[0].function.name, "".join(c.function.arguments or "" for c in calls)
    else:
        answer = await openai_client.chat.completions.create(model="claude", messages=messages, tools=[WEATHER],
                                                             tool_choice="required")
        assert answer.choices[0].finish_reason == "tool_calls"
        call = answer.choices[0].message.tool_calls[0]
        call_id, name, arguments = call.id, call.function.name, call.function.arguments
    assert (call_id, name, arguments) == ("tooluse_01", "weather", '{"city": "Paris"}')
    assert bedrock.received[-1].body["toolConfig"]["toolChoice"] == {"any": {}}
    messages += [{"role": "assistant", "content": None, "tool_calls": [
                     {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}]},
                 {"role": "tool", "tool_call_id": call_id, "content": "sunny"}]
    final = await openai_client.chat.completions.create(model="claude", messages=messages)
    assert final.choices[0].message.content == "the tool said sunny"
    sent = bedrock.received[-1].body["messages"]
    assert sent[1]["content"] == [{"toolUse": {"toolUseId": "tooluse_01", "name": "weather", "input": {"city": "Paris"}}}]
    assert sent[2]["content"] == [{"toolResult": {"toolUseId": "tooluse_01", "content": [{"text": "sunny"}]}}]


async def test_images_and_documents(client, models: Models, bedrock) -> None:
    router = await bedrock_router(models, bedrock)
    user = await models.user_for(router)
    openai_client = sdk(client, user.key)
    png = base64.b64encode(b"\x89PNG image").decode()
    answer = await openai_client.chat.completions.create(model="claude", messages=[{"role": "user", "content": [
        {"type": "text", "text": "what?"}, {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}}]}])
    assert answer.choices[0].message.content == f"read image png {hashlib.sha256(png.encode()).hexdigest()[:12]}"
    pdf = base64.b64encode(b"%PDF-1.4 a document").decode()
    answer = await openai_client.chat.completions.create(model="claude", messages=[{"role": "user", "content": [
        {"type": "file", "file": {"filename": "report.pdf", "file_data": f"data:application/pdf;base64,{pdf}"}}]}])
    assert answer.choices[0].message.content == f"read document report pdf {len(pdf)}"
    # The Bedrock connector's own `doc` part, its bytes as an index-keyed object.
    raw = b"a,b\n1,2\n"
    response = await client.post("/v1/chat/completions", headers=user.headers, json={"model": "claude", "messages": [
        {"role": "user", "content": [{"type": "doc", "doc": {"name": "table.csv", "format": "csv", "size": len(raw),
                                                             "source": {"bytes": {str(i): b for i, b in enumerate(raw)}}}}]}]})
    assert response.json()["choices"][0]["message"]["content"] == f"read document table csv {len(base64.b64encode(raw))}"
    remote = await client.post("/v1/chat/completions", headers=user.headers, json={"model": "claude", "messages": [
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]})
    assert remote.status_code == 400 and "data URLs" in remote.json()["detail"]


async def test_errors_pass_through_or_fail_over(client, models: Models, bedrock, second_bedrock) -> None:
    router = await bedrock_router(models, bedrock, second_bedrock)
    user = await models.user_for(router)
    checks = len(bedrock.received) + len(second_bedrock.received)
    bedrock.behaviour.fail_status = second_bedrock.behaviour.fail_status = 400
    with pytest.raises(openai.BadRequestError) as error:
        await sdk(client, user.key).chat.completions.create(model="claude", messages=[{"role": "user", "content": "x"}])
    assert error.value.body["message"] == "injected failure 400"
    assert len(bedrock.received) + len(second_bedrock.received) == checks + 1
    second = next(p.id for p in client.app.state.context.catalog.get(router).providers if p.url == second_bedrock.base_url)
    for status in (429, 503):
        bedrock.behaviour.fail_status, second_bedrock.behaviour.fail_status = status, None
        await client.app.state.context.load.cool_down(second, 60)
        before = len(second_bedrock.received)
        response = await client.post("/v1/chat/completions", headers=user.headers,
                                     json={"model": "claude", "messages": [{"role": "user", "content": "x"}], "stream": True})
        assert response.status_code == 200 and "word4" in response.text and len(second_bedrock.received) == before + 1


async def test_a_provider_is_checked_with_a_signed_call(client, models: Models, bedrock) -> None:
    router = await models.router("claude")
    body = {"router": router, "type": "bedrock", "url": bedrock.base_url, "model_name": BEDROCK_MODEL, "region": REGION}
    wrong = await client.post("/v1/admin/providers", headers=ADMIN, json={**body, "key": f"{ACCESS_KEY}:not-the-secret"})
    assert wrong.status_code == 400 and "403" in wrong.json()["detail"]
    elsewhere = await client.post("/v1/admin/providers", headers=ADMIN, json={**body, "key": KEY, "region": "us-east-1"})
    assert elsewhere.status_code == 400
    no_region = await client.post("/v1/admin/providers", headers=ADMIN, json={**body, "key": KEY, "region": None})
    assert no_region.status_code == 400 and "region" in no_region.json()["detail"]
    created = await client.post("/v1/admin/providers", headers=ADMIN, json={**body, "key": KEY})
    assert created.status_code == 201 and SECRET_KEY not in created.text and created.json()["region"] == REGION
    provider = created.json()["id"]
    moved = await client.patch(f"/v1/admin/providers/{provider}", headers=ADMIN, json={"region": "us-east-1"})
    assert moved.status_code in (200, 204), moved.text
    assert (await client.get(f"/v1/admin/providers/{provider}", headers=ADMIN)).json()["region"] == "us-east-1"
    user = await models.user_for(router)
    refused = await client.post("/v1/chat/completions", headers=user.headers,
                                json={"model": "claude", "messages": [{"role": "user", "content": "x"}]})
    assert refused.status_code == 403  # signed for another region: AWS's refusal, passed through


async def test_credentials_from_the_aws_chain(client, models: Models, bedrock, monkeypatch, app_factory) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    router = await bedrock_router(models, bedrock, key=None)
    user = await models.user_for(router)
    answer = await sdk(client, user.key).chat.completions.create(model="claude", messages=[{"role": "user", "content": "x"}])
    assert answer.choices[0].message.content == "word0 word1 word2 word3 word4"
    # Each app resolves the chain itself: one started after the secret changed signs with the
    # new one (refused here), never with what another app of the process had resolved.
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-" + SECRET_KEY)
    replica = await app_factory(empty=False)
    refused = await replica.post("/v1/chat/completions", headers=user.headers,
                                 json={"model": "claude", "messages": [{"role": "user", "content": "x"}]})
    assert refused.status_code == 403, refused.text
    assert (await client.post("/v1/chat/completions", headers=user.headers,
                              json={"model": "claude", "messages": [{"role": "user", "content": "x"}]})).status_code == 200
