"""Benchmark: document ingestion throughput and search latency, Qdrant local mode.

    .venv/bin/python bench/rag.py [--pages 200] [--sizes 10000,100000] [--dimensions 256]

1. Ingestion: a generated PDF of `--pages` pages is uploaded through the API; the time until
   the document is `ready` (parse, split, embed against the fake upstream, index) gives pages/s.
2. Search: `--sizes` chunks are written to a fresh local-mode collection, then `--queries` queries per
   method are timed at the vector store (the embedding call excluded) and through
   POST /v1/search (embedding included), p50/p99.

Everything runs on this machine; figures are only comparable between runs on the same one.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from api.http.app import create_app  # noqa: E402
from api.rag.schemas import SearchMethod  # noqa: E402
from api.rag.vectors import NewChunk, Scope  # noqa: E402
from api.settings import Settings  # noqa: E402
from fakes.upstream import Behaviour, FakeUpstream  # noqa: E402
from pdfs import make_pdf  # noqa: E402

MASTER = "bench-master-key"
ADMIN = {"Authorization": f"Bearer {MASTER}"}
WORDS = ("policy leave budget rocket kerosene orbit bread flour yeast cat mouse purr garden tomato river bridge "
         "contract invoice tax holiday train station museum painting violin concert server database cache "
         "network vaccine doctor hospital school teacher exam harvest wheat barley storm forecast").split()


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def setup(tmp: str, upstream: FakeUpstream) -> tuple[httpx.AsyncClient, dict[str, str], int, object]:
    settings = Settings(
        settings={"auth_master_key": MASTER, "log_level": "WARNING", "access_log": False,
                  "rag": {"vector_store_model": "embeddings", "ingestion_concurrency": 1, "embedding_batch_size": 64}},
        dependencies={"database": {"url": f"sqlite+aiosqlite:///{tmp}/tollgate.db"}, "qdrant": {"path": f"{tmp}/qdrant"}},
    )
    from api.db.migrate import upgrade_database

    await asyncio.to_thread(upgrade_database, settings.dependencies.database.url)
    app = create_app(settings)
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench", timeout=600)
    router = (await client.post("/v1/admin/routers", headers=ADMIN,
                                json={"name": "embeddings", "type": "text-embeddings-inference"})).json()["id"]
    await client.post("/v1/admin/providers", headers=ADMIN,
                      json={"router": router, "type": "vllm", "url": upstream.base_url, "model_name": "fake-embed"})
    role = (await client.post("/v1/admin/roles", headers=ADMIN,
                              json={"name": "bench", "limits": [{"router": router, "type": "rpm", "value": None}]})).json()["id"]
    user = (await client.post("/v1/admin/users", headers=ADMIN,
                              json={"email": "bench@example.com", "password": "bench-password", "role": role})).json()["id"]
    key = (await client.post("/v1/admin/tokens", headers=ADMIN, json={"name": "bench", "user": user})).json()["token"]
    headers = {"Authorization": f"Bearer {key}"}
    collection = (await client.post("/v1/collections", headers=headers, json={"name": "bench"})).json()["id"]
    return client, headers, collection, (app, lifespan)


async def ingestion(client: httpx.AsyncClient, headers: dict[str, str], collection: int, pages: int) -> None:
    rng = random.Random(1)
    pdf = make_pdf([sentence(rng, 350) for _ in range(pages)])
    started = time.perf_counter()
    response = await client.post("/v1/documents", headers=headers, files={"file": ("bench.pdf", pdf)},
                                 data={"collection_id": str(collection), "chunk_size": "1000"})
    document = response.json()["id"]
    while (info := (await client.get(f"/v1/documents/{document}", headers=headers)).json())["status"] == "processing":
        await asyncio.sleep(0.05)
    seconds = time.perf_counter() - started
    print(f"| ingestion | {pages}-page PDF ({len(pdf) // 1024} KiB), {info['chunks']} chunks | {seconds:.2f} s | "
          f"{pages / seconds:.1f} pages/s, {info['chunks'] / seconds:.0f} chunks/s |")


async def search(client: httpx.AsyncClient, headers: dict[str, str], context: object, size: int, dimensions: int,
                 queries: int) -> None:
    rng = random.Random(size)
    vectors = context.vectors  # type: ignore[attr-defined]
    collection = (await client.post("/v1/collections", headers=headers, json={"name": f"search-{size}"})).json()["id"]
    document = (await client.post("/v1/documents", headers=headers,
                                  data={"collection_id": str(collection), "name": f"corpus-{size}"})).json()["id"]
    embed = FakeUpstream(behaviour=Behaviour(embedding_dimensions=dimensions))._vector
    started = time.perf_counter()
    batch = 1000
    for start in range(0, size, batch):
        chunks = [NewChunk(start + i + 1, sentence(rng, 60), {"n": start + i}) for i in range(min(batch, size - start))]
        await vectors.upsert(collection, document, chunks, [embed(c.content) for c in chunks], ready=True, created=0)
    load_seconds = time.perf_counter() - started
    scope = Scope([collection], [])
    for method in SearchMethod:
        store_ms, api_ms = [], []
        for _ in range(queries):
            query = sentence(rng, 6)
            t = time.perf_counter()
            await vectors.search(scope, method, query, embed(query), None, 10, 0, 60, 0.0)
            store_ms.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            response = await client.post("/v1/search", headers=headers,
                                          json={"query": query, "collection_ids": [collection], "method": method.value})
            assert response.status_code == 200, response.text
            api_ms.append((time.perf_counter() - t) * 1000)
        print(f"| search, {size} chunks | {method.value} | store p50 {statistics.median(store_ms):.1f} ms, "
              f"p99 {percentile(store_ms, 0.99):.1f} ms | /v1/search p50 {statistics.median(api_ms):.1f} ms, "
              f"p99 {percentile(api_ms, 0.99):.1f} ms | (loaded in {load_seconds:.0f} s) |")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=200)
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--dimensions", type=int, default=256)
    parser.add_argument("--queries", type=int, default=30, help="queries per method and size")
    args = parser.parse_args()
    upstream = FakeUpstream(behaviour=Behaviour(embedding_dimensions=args.dimensions), log_requests=False)
    await upstream.start()
    with tempfile.TemporaryDirectory() as tmp:
        client, headers, collection, (app, lifespan) = await setup(tmp, upstream)
        print("| what | size | measure | result |")
        print("|---|---|---|---|")
        await ingestion(client, headers, collection, args.pages)
        for size in (int(s) for s in args.sizes.split(",") if s):
            await search(client, headers, app.state.context, size, args.dimensions, args.queries)  # type: ignore[attr-defined]
        await client.aclose()
        await lifespan.__aexit__(None, None, None)
    await upstream.stop()


if __name__ == "__main__":
    asyncio.run(main())
