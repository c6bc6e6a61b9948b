"""The documents tests' kit: an app with documents on, an embedding router on the fake
provider, and a user's steps (collections, uploads until ready, searches). Its fixtures are
given to every test module by conftest (`pytest_plugins`)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx
import pytest
from conftest import Models, SeededUser, Seeder, fake_upstream
from fakes.upstream import Behaviour, FakeUpstream
from pdfs import make_pdf

RAG_SETTINGS = {"rag": {"vector_store_model": "embeddings", "ingestion_concurrency": 1}}


@pytest.fixture
async def embedding_upstream():
    async for fake in fake_upstream(Behaviour(embedding_dimensions=256)):
        yield fake


@dataclass
class Rag:
    client: httpx.AsyncClient
    models: Models
    router: int
    upstream: FakeUpstream

    async def user(self, **extra: object) -> SeededUser:
        return await self.models.user_for(self.router, **extra)

    async def collection(self, user: SeededUser, name: str = "docs", visibility: str = "private") -> int:
        response = await self.client.post("/v1/collections", json={"name": name, "visibility": visibility}, headers=user.headers)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    async def upload(self, user: SeededUser, collection: int, filename: str, content: bytes, **form: str) -> httpx.Response:
        return await self.client.post(
            "/v1/documents", headers=user.headers, files={"file": (filename, content)},
            data={"collection_id": str(collection), **form},
        )

    async def ready(self, user: SeededUser, document: int, timeout: float = 20) -> dict:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            body = (await self.client.get(f"/v1/documents/{document}", headers=user.headers)).json()
            if body["status"] != "processing":
                return body
            assert asyncio.get_running_loop().time() < deadline, body
            await asyncio.sleep(0.05)

    async def ingest(self, user: SeededUser, collection: int, filename: str, content: bytes, **form: str) -> int:
        response = await self.upload(user, collection, filename, content, **form)
        assert response.status_code == 201, response.text
        document = response.json()["id"]
        assert (await self.ready(user, document))["status"] == "ready"
        return document

    async def search(self, user: SeededUser, query: str, **args: object) -> httpx.Response:
        return await self.client.post("/v1/search", json={"query": query, **args}, headers=user.headers)


@pytest.fixture
async def rag(app_factory, embedding_upstream) -> Rag:
    client = await app_factory(**RAG_SETTINGS)
    models = Models(client, Seeder(client))
    router = await models.router("embeddings", type="text-embeddings-inference", cost_prompt_tokens=2)
    await models.provider(router, embedding_upstream.base_url, model_name="fake-embed")
    return Rag(client, models, router, embedding_upstream)


SIX_PAGES = [f"Page {n} is about topic number {n}." for n in range(1, 7)]


async def document_waiting(app_factory, embedding_upstream: FakeUpstream, filename: str, content: bytes,
                           **rag: object) -> tuple[Rag, SeededUser, int]:
    """An app with no ingestion worker (the test plays the workers itself), and a user's
    document waiting to be ingested."""
    client = await app_factory(rag={"vector_store_model": "embeddings", "ingestion_concurrency": 0, **rag})
    models = Models(client, Seeder(client))
    router = await models.router("embeddings", type="text-embeddings-inference")
    await models.provider(router, embedding_upstream.base_url, model_name="fake-embed")
    kit = Rag(client, models, router, embedding_upstream)
    user = await kit.user()
    collection = await kit.collection(user)
    document = (await kit.upload(user, collection, filename, content)).json()["id"]
    return kit, user, document


async def six_pages_waiting(app_factory, embedding_upstream: FakeUpstream, **rag: object) -> tuple[Rag, SeededUser, int]:
    """`SIX_PAGES` as a PDF waiting, embedded a chunk per call."""
    return await document_waiting(app_factory, embedding_upstream, "six.pdf", make_pdf(SIX_PAGES), embedding_batch_size=1, **rag)
