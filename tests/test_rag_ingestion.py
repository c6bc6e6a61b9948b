"""Ingestion at the embedder's speed: a document's batches are embedded by several calls at
once, within the provider's QoS cap, and its progress moves as they land."""

from __future__ import annotations

import asyncio

from conftest import Models, Seeder, fake_upstream
from fakes.upstream import Behaviour
from ragkit import Rag

CAP = 3


async def test_a_document_is_embedded_by_concurrent_calls_within_the_providers_cap(app_factory) -> None:
    async for fake in fake_upstream(Behaviour(embedding_dimensions=16, delay_seconds=0.15)):
        client = await app_factory(rag={"vector_store_model": "embeddings", "ingestion_concurrency": 1,
                                        "embedding_batch_size": 2, "embedding_concurrency": 5})
        models = Models(client, Seeder(client))
        router = await models.router("embeddings", type="text-embeddings-inference")
        await models.provider(router, fake.base_url, model_name="fake-embed", qos_metric="inflight", qos_limit=CAP)
        rag = Rag(client, models, router, fake)
        user = await rag.user()
        collection = await rag.collection(user)
        text = "\n\n".join(f"Paragraph {n} tells of harbour number {n}." for n in range(24))  # 24 chunks, 12 calls
        response = await rag.upload(user, collection, "harbours.md", text.encode(), chunk_size="50")
        assert response.status_code == 201, response.text
        document, seen = response.json()["id"], set()
        while (info := (await client.get(f"/v1/documents/{document}", headers=user.headers)).json())["status"] == "processing":
            seen.add(info["progress"])
            await asyncio.sleep(0.02)
        assert info["status"] == "ready" and info["chunks"] == 24
        assert fake.max_in_flight == CAP  # concurrent calls, never past the provider's cap
        assert len({p for p in seen if 0 < p < 1}) >= 2  # progress shown as batches land
        # (How fast that is, is measured by bench/rag.py, not asserted here.)
