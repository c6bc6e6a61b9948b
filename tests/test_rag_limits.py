"""Chunks the embedding model can read whole: split under its input limit (learnt from the
provider), a longer chunk or query refused with a clear message, nothing cut off silently.
The fake provider refuses an over-long input as vLLM does."""

from __future__ import annotations

import pytest
from conftest import ADMIN, Models, Seeder, fake_upstream
from fakes.upstream import Behaviour
from ragkit import RAG_SETTINGS, Rag

LIMIT = 40  # the fake model's input limit, in its tokens (words)
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa".split()


@pytest.fixture
async def short_model_rag(app_factory) -> Rag:
    async for fake in fake_upstream(Behaviour(embedding_dimensions=64, max_context_length=LIMIT)):
        client = await app_factory(**RAG_SETTINGS)
        models = Models(client, Seeder(client))
        router = await models.router("embeddings", type="text-embeddings-inference")
        await models.provider(router, fake.base_url, model_name="fake-embed")
        yield Rag(client, models, router, fake)


def paragraphs(count: int, words: int) -> list[str]:
    return [" ".join(WORDS[(p + i) % len(WORDS)] for i in range(words)) for p in range(count)]


async def test_a_document_is_split_under_the_models_input_limit_and_loses_no_word(short_model_rag: Rag) -> None:
    rag = short_model_rag
    router = (await rag.client.get("/v1/models/embeddings", headers=(user := await rag.user()).headers)).json()
    assert router["max_context_length"] == LIMIT  # learnt from the provider
    collection = await rag.collection(user)
    text = "\n\n".join(paragraphs(3, 100))  # 300 words, under the default chunk_size of 2048 characters per paragraph
    document = await rag.ingest(user, collection, "long.md", text.encode())
    chunks = (await rag.client.get(f"/v1/documents/{document}/chunks", params={"limit": 100}, headers=user.headers)).json()["data"]
    assert len(chunks) >= 300 // LIMIT and all(len(c["content"].split()) <= LIMIT for c in chunks)
    assert " ".join(c["content"] for c in chunks).split() == text.split()  # every word, once, in order
    # The provider never had to refuse (nor truncate) anything.
    embedded = [r for r in rag.upstream.received if r.path == "/v1/embeddings"]
    assert embedded and all(len(t.split()) <= LIMIT for r in embedded for t in r.body["input"])


async def test_a_tei_provider_tells_its_limit_too(short_model_rag: Rag) -> None:
    rag = short_model_rag
    router = await rag.models.router("tei-embeddings", type="text-embeddings-inference")
    rag.upstream.models = ["fake-chat"]  # its OpenAI model list says nothing of the embedding model
    await rag.models.provider(router, rag.upstream.base_url, model_name="fake-embed", type="tei")
    listed = (await rag.client.get(f"/v1/admin/routers/{router}", headers=ADMIN)).json()
    assert listed["max_context_length"] == LIMIT  # from TEI's GET /info


async def test_one_chunk_per_page_longer_than_the_model_reads_fails_the_document_clearly(short_model_rag: Rag) -> None:
    rag = short_model_rag
    user = await rag.user()
    collection = await rag.collection(user)
    response = await rag.upload(user, collection, "long.md", paragraphs(1, 100)[0].encode(), disable_chunking="true")
    assert response.status_code == 201
    document = await rag.ready(user, response.json()["id"])
    assert document["status"] == "failed" and "more than the embedding model reads whole" in document["error"]
    assert "chunking on" in document["error"]


async def test_a_chunk_or_query_longer_than_the_model_reads_is_refused(short_model_rag: Rag) -> None:
    rag = short_model_rag
    user = await rag.user()
    collection = await rag.collection(user)
    document = (await rag.client.post("/v1/documents", data={"collection_id": str(collection), "name": "notes"},
                                      headers=user.headers)).json()["id"]
    long, short = paragraphs(1, 3 * LIMIT)[0], "a short note"
    refused = await rag.client.post(f"/v1/documents/{document}/chunks", json={"chunks": [{"content": short}, {"content": long}]},
                                    headers=user.headers)
    assert refused.status_code == 400 and "Chunk 2 is about" in refused.json()["detail"]
    assert f"reads at most {LIMIT}" in refused.json()["detail"]
    listing = (await rag.client.get(f"/v1/documents/{document}/chunks", headers=user.headers)).json()
    assert listing["data"] == []  # nothing half-written
    accepted = await rag.client.post(f"/v1/documents/{document}/chunks", json={"chunks": [{"content": short}]}, headers=user.headers)
    assert accepted.status_code == 201
    query = await rag.search(user, long, method="semantic")
    assert query.status_code == 400 and "The query is about" in query.json()["detail"]
    assert (await rag.search(user, long, method="lexical")).status_code == 200  # no embedding: any length
