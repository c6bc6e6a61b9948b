"""An `azure` provider: Azure OpenAI's deployment paths, api-version and api-key header, behind
Tollgate's OpenAI endpoints (a fake Azure resource over HTTP)."""

from __future__ import annotations

import openai
import pytest

from conftest import ADMIN, Models, usage_rows
from fakes.azure import DEPLOYMENT, FakeAzure
from test_gateway_chat import sdk

WEATHER = {"type": "function", "function": {"name": "weather", "parameters": {"type": "object", "properties": {}}}}


async def azure_router(models: Models, *fakes: FakeAzure, api_version: str | None = None) -> int:
    router = await models.router("house")
    for fake in fakes:
        extra = {"api_version": api_version} if api_version else {}
        await models.provider(router, fake.base_url, type="azure", model_name=DEPLOYMENT, key=fake.azure_key, **extra)
    return router


async def test_chat_stream_tools_and_images_on_a_deployment(client, models: Models, azure) -> None:
    router = await azure_router(models, azure, api_version="2025-01-01-preview")
    user = await models.user_for(router)
    openai_client = sdk(client, user.key)
    answer = await openai_client.chat.completions.create(model="house", messages=[{"role": "user", "content": "one two"}],
                                                         max_tokens=3)
    assert answer.choices[0].message.content == "word0 word1 word2" and answer.usage.prompt_tokens == 2
    sent = azure.received[-1]
    assert sent.path == f"/openai/deployments/{DEPLOYMENT}/chat/completions" and sent.headers["api-key"] == azure.azure_key
    assert "Authorization" not in sent.headers and sent.body["max_completion_tokens"] == 3 and "max_tokens" not in sent.body
    assert azure.api_versions[-1] == "2025-01-01-preview"
    chunks = [c async for c in await openai_client.chat.completions.create(
        model="house", messages=[{"role": "user", "content": "one"}], stream=True)]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "word0 word1 word2 word3 word4"
    tool = await openai_client.chat.completions.create(model="house", messages=[{"role": "user", "content": "x"}], tools=[WEATHER])
    assert tool.choices[0].message.tool_calls[0].function.name == "weather"
    image = await openai_client.chat.completions.create(model="house", messages=[{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}}]}])
    assert image.choices[0].message.content.startswith("read image")
    rows = await usage_rows(client)
    assert [r.status for r in rows] == [200] * 4 and rows[0].completion_tokens == 3


async def test_embeddings_on_a_deployment(client, models: Models, azure) -> None:
    router = await models.router("ada", type="text-embeddings-inference")
    await models.provider(router, azure.base_url, type="azure", model_name="ada-house", key=azure.azure_key)
    user = await models.user_for(router)
    vectors = await sdk(client, user.key).embeddings.create(model="ada", input=["a b", "c"])
    assert len(vectors.data) == 2 and vectors.usage.prompt_tokens == 3
    assert azure.received[-1].path == "/openai/deployments/ada-house/embeddings" and azure.api_versions[-1] == "2024-10-21"


async def test_errors_pass_through_or_fail_over(client, models: Models, azure, second_azure) -> None:
    router = await azure_router(models, azure, second_azure)
    user = await models.user_for(router)
    checks = len(azure.received) + len(second_azure.received)  # each was checked by a call when added
    azure.behaviour.fail_status = second_azure.behaviour.fail_status = 400
    with pytest.raises(openai.BadRequestError):
        await sdk(client, user.key).chat.completions.create(model="house", messages=[{"role": "user", "content": "x"}])
    assert len(azure.received) + len(second_azure.received) == checks + 1
    for status in (429, 503):
        azure.behaviour.fail_status, second_azure.behaviour.fail_status = status, None
        await client.app.state.context.load.cool_down(
            next(p.id for p in client.app.state.context.catalog.get(router).providers if p.url == second_azure.base_url), 60)
        before = len(second_azure.received)
        response = await client.post("/v1/chat/completions", headers=user.headers,
                                     json={"model": "house", "messages": [{"role": "user", "content": "x"}]})
        assert response.status_code == 200 and len(second_azure.received) == before + 1


async def test_a_deployment_is_checked_by_a_call(client, models: Models, azure) -> None:
    router = await models.router("house")
    body = {"router": router, "type": "azure", "url": azure.base_url, "model_name": DEPLOYMENT}
    wrong = await client.post("/v1/admin/providers", headers=ADMIN, json={**body, "key": "wrong-key-0123"})
    assert wrong.status_code == 400 and "401" in wrong.json()["detail"]
    missing = await client.post("/v1/admin/providers", headers=ADMIN, json={**body, "key": azure.azure_key, "model_name": "nope"})
    assert missing.status_code == 400
    created = await client.post("/v1/admin/providers", headers=ADMIN, json={**body, "key": azure.azure_key})
    assert created.status_code == 201 and created.json()["key"].startswith("***")
    assert azure.received[-1].body["max_completion_tokens"] == 1
