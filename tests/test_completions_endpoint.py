"""The legacy `POST /v1/completions` (with the openai SDK), and rerank answers' ids."""

from __future__ import annotations

import pytest

from conftest import Models, usage_rows
from fakes.anthropic import CLAUDE_MODEL
from test_gateway_chat import sdk


async def test_a_completion_whole_and_streamed(client, models: Models, upstream) -> None:
    router = await models.router(cost_prompt_tokens=1, cost_completion_tokens=1)
    await models.provider(router, upstream.base_url)
    user = await models.user_for(router, budget=1)
    openai = sdk(client, user.key)
    answer = await openai.completions.create(model="chat", prompt="one two three", max_tokens=3)
    assert answer.choices[0].text == " word0 word1 word2" and answer.choices[0].finish_reason == "length"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (3, 3)
    assert upstream.received[-1].path == "/v1/completions" and upstream.received[-1].body["max_tokens"] == 3
    chunks = [c async for c in await openai.completions.create(model="chat", prompt=["one two"], stream=True)]
    assert "".join(c.choices[0].text for c in chunks if c.choices) == " word0 word1 word2 word3 word4"
    assert chunks[-1].usage.prompt_tokens == 2 and chunks[-1].usage.completion_tokens == 5
    assert upstream.received[-1].body["max_tokens"] == 16  # the API's default, sent (and reserved for) explicitly
    rows = await usage_rows(client)
    assert [(r.endpoint, r.status, r.prompt_tokens, r.completion_tokens) for r in rows] == [
        ("/v1/completions", 200, 3, 3), ("/v1/completions", 200, 2, 5)]


async def test_routers_that_cannot_serve_completions_refuse_them(client, models: Models, upstream, claude) -> None:
    router = await models.router("claude")
    await models.provider(router, claude.base_url, type="anthropic", model_name=CLAUDE_MODEL, key=claude.api_key)
    embeddings = await models.router("embed", type="text-embeddings-inference")
    await models.provider(embeddings, upstream.base_url, model_name="fake-embed")
    user = await models.user_for(router, embeddings)
    for model in ("claude", "embed"):
        response = await client.post("/v1/completions", headers=user.headers, json={"model": model, "prompt": "x"})
        assert response.status_code == 400, response.text
    assert not any(r.path == "/v1/completions" for r in upstream.received) and claude.received == []


@pytest.mark.parametrize("provider_type", ["vllm", "tei"])
async def test_rerank_answers_have_an_id(client, models: Models, upstream, provider_type: str) -> None:
    router = await models.router("rerank", type="text-classification")
    await models.provider(router, upstream.base_url, type=provider_type)
    user = await models.user_for(router)
    answer = (await client.post("/v1/rerank", headers=user.headers,
                                json={"model": "rerank", "query": "cat", "documents": ["a cat", "a dog"]})).json()
    assert isinstance(answer["id"], str) and answer["id"]
