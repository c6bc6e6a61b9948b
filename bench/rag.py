"""Benchmark: search latency in the embedded vector store (Qdrant Edge), alone and beside
another tenant holding 10x the data, and ingestion throughput through the API.

    .venv/bin/python bench/rag.py [--sizes 1000,10000,100000] [--other-factor 10] [--max-other 300000]
                                  [--dimensions 384] [--queries 200] [--pages 100]

1. Search: for each size, a fresh store gets one tenant's chunks (a collection of `size`
   chunks), indexed (the optimiser, as ingestion triggers it); `--queries` queries per method
   are timed at the vector store (the query's embedding excluded: it is the model's time).
   Then another tenant (another owner, so in the embedded store a shard of their own) gets a
   collection of `--other-factor` x size chunks (at most `--max-other`), indexed, and the first
   tenant's queries are timed again. Vectors come from a
   fast fake embedder: clustered random vectors (numpy), texts of topic words and Zipf-spread
   filler words, so HNSW and the lexical index see realistic shapes, not real meaning.
2. Ingestion: a generated PDF is uploaded through the API against the fake upstream, whose
   embeddings call takes `--embed-ms` (a model's time); chunks/s with one embeddings call at a
   time and with `embedding_concurrency` calls.

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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from api.rag.edge_engine import EdgeEngine  # noqa: E402
from api.rag.schemas import FusionMethod, SearchMethod  # noqa: E402
from api.rag.vectors import NewChunk, Scope, SearchQuery, VectorStore  # noqa: E402

TOPICS = 200
VOCABULARY = 20_000
BATCH = 2000


class Corpus:
    """Chunks of a tenant: clustered vectors and texts that share their topic's words."""

    def __init__(self, seed: int, dimensions: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.words = random.Random(seed)
        self.centres = self.rng.normal(size=(TOPICS, dimensions)).astype(np.float32)
        self.topic_words = [[f"t{t}w{i}" for i in range(30)] for t in range(TOPICS)]

    def _filler(self, count: int) -> list[str]:
        return [f"w{min(VOCABULARY, int(self.words.paretovariate(1.1) * 10))}" for _ in range(count)]

    def text(self, topic: int, words: int = 60) -> str:
        mine = self.words.choices(self.topic_words[topic], k=words // 3)
        return " ".join(mine + self._filler(words - len(mine)))

    def vectors(self, topics: np.ndarray, spread: float = 0.6) -> list[list[float]]:
        raw = self.centres[topics] + spread * self.rng.normal(size=(len(topics), self.centres.shape[1])).astype(np.float32)
        return (raw / np.linalg.norm(raw, axis=1, keepdims=True)).tolist()

    def query(self) -> tuple[str, list[float]]:
        topic = int(self.rng.integers(TOPICS))
        text = " ".join(self.words.sample(self.topic_words[topic], 2) + self._filler(1))
        return text, self.vectors(np.array([topic]), spread=0.9)[0]


async def load(vectors: VectorStore, corpus: Corpus, collection: int, first_document: int, size: int) -> None:
    """`size` chunks in documents of 1000 chunks, written ready (as ingestion leaves them)."""
    for start in range(0, size, BATCH):
        count = min(BATCH, size - start)
        topics = corpus.rng.integers(TOPICS, size=count)
        chunks = [NewChunk((start + i) % 1000 + 1, corpus.text(int(t)), {"topic": int(t)}) for i, t in enumerate(topics)]
        embedded = corpus.vectors(topics)
        by_document: dict[int, list[int]] = {}
        for i in range(count):
            by_document.setdefault(first_document + (start + i) // 1000, []).append(i)
        for document, indices in by_document.items():
            await vectors.upsert(collection, collection, document, [chunks[i] for i in indices], [embedded[i] for i in indices],
                                 ready=True, created=0)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def timed(vectors: VectorStore, corpus: Corpus, collection: int, queries: int) -> dict[str, tuple[float, float]]:
    figures = {}
    scope = Scope([collection], [], {collection: collection})  # each tenant owns one collection
    asked = [corpus.query() for _ in range(queries)]
    for method in SearchMethod:
        times = []
        for text, vector in asked:
            started = time.perf_counter()
            await vectors.search(scope, SearchQuery(method=method, text=text, vector=vector, metadata_filter=None, limit=10,
                                                    offset=0, fusion=FusionMethod.dbsf, semantic_weight=0.7, lexical_weight=0.3))
            times.append((time.perf_counter() - started) * 1000)
        figures[method.value] = (statistics.median(times), percentile(times, 0.95))
    return figures


async def load_and_index(vectors: VectorStore, engine: EdgeEngine, corpus: Corpus, collection: int, first_document: int,
                         size: int, label: str) -> None:
    started = time.perf_counter()
    await load(vectors, corpus, collection, first_document, size)
    loaded = time.perf_counter() - started
    started = time.perf_counter()
    await engine.optimise_now()  # waits for the runs ingestion started, then runs it once more
    print(f"<!-- {label}: loaded in {loaded:.0f} s (indexing as it went), then indexed in {time.perf_counter() - started:.0f} s -->",
          flush=True)


async def search_at(size: int, other: int, dimensions: int, queries: int, tmp: str) -> None:
    engine = EdgeEngine(f"{tmp}/edge-{size}", "bench")
    vectors = VectorStore(None, "bench", engine=engine)
    mine, theirs = Corpus(1, dimensions), Corpus(2, dimensions)
    await load_and_index(vectors, engine, mine, 1, 1, size, f"{size:,}")
    rows = [("alone", await timed(vectors, mine, 1, queries))]
    if other:
        await load_and_index(vectors, engine, theirs, 2, 10_000_000, other, f"+{other:,} of another tenant")
        rows.append((f"beside another tenant's {other:,}", await timed(vectors, mine, 1, queries)))
    for label, figures in rows:
        cells = " | ".join(f"{p50:.1f} / {p95:.1f}" for p50, p95 in figures.values())
        print(f"| {size:,} | {label} | {cells} |", flush=True)
    await vectors.close()


async def ingestion(pages: int, embed_ms: float, dimensions: int, tmp: str) -> None:
    import httpx

    from api.db.migrate import upgrade_database
    from api.http.app import create_app
    from api.settings import Settings
    from fakes.upstream import Behaviour, FakeUpstream
    from pdfs import make_pdf

    upstream = FakeUpstream(behaviour=Behaviour(embedding_dimensions=dimensions, delay_seconds=embed_ms / 1000), log_requests=False)
    await upstream.start()
    rng = random.Random(1)
    words = "policy leave budget rocket orbit bread flour yeast garden river contract invoice train museum".split()
    pdf = make_pdf([" ".join(rng.choice(words) for _ in range(350)) for _ in range(pages)])
    for concurrency in (1, 4):
        folder = f"{tmp}/ingest-{concurrency}"
        Path(folder).mkdir()
        settings = Settings(
            settings={"auth_master_key": "bench-master-key", "log_level": "WARNING", "access_log": False,
                      "rag": {"vector_store_model": "embeddings", "ingestion_concurrency": 1, "embedding_batch_size": 32,
                              "embedding_concurrency": concurrency}},
            dependencies={"database": {"url": f"sqlite+aiosqlite:///{folder}/tollgate.db"}, "qdrant": {"path": f"{folder}/qdrant"}},
        )
        await asyncio.to_thread(upgrade_database, settings.dependencies.database.url)
        app = create_app(settings)
        async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bench", timeout=600
        ) as client:
            admin = {"Authorization": "Bearer bench-master-key"}
            router = (await client.post("/v1/admin/routers", headers=admin,
                                        json={"name": "embeddings", "type": "text-embeddings-inference"})).json()["id"]
            await client.post("/v1/admin/providers", headers=admin,
                              json={"router": router, "type": "vllm", "url": upstream.base_url, "model_name": "fake-embed"})
            role = (await client.post("/v1/admin/roles", headers=admin,
                                      json={"name": "bench", "limits": [{"router": router, "type": "rpm", "value": None}]})).json()["id"]
            user = (await client.post("/v1/admin/users", headers=admin,
                                      json={"email": "bench@example.com", "password": "bench-password", "role": role})).json()["id"]
            key = (await client.post("/v1/admin/tokens", headers=admin, json={"name": "bench", "user": user})).json()["token"]
            headers = {"Authorization": f"Bearer {key}"}
            collection = (await client.post("/v1/collections", headers=headers, json={"name": "bench"})).json()["id"]
            started = time.perf_counter()
            response = await client.post("/v1/documents", headers=headers, files={"file": ("bench.pdf", pdf)},
                                         data={"collection_id": str(collection), "chunk_size": "1000"})
            document = response.json()["id"]
            while (info := (await client.get(f"/v1/documents/{document}", headers=headers)).json())["status"] == "processing":
                await asyncio.sleep(0.05)
            seconds = time.perf_counter() - started
        assert info["status"] == "ready", info
        calls = -(-info["chunks"] // 32)
        print(f"| {pages}-page PDF, {info['chunks']} chunks, {calls} calls of {embed_ms:.0f} ms | {concurrency} | {seconds:.2f} s | "
              f"{info['chunks'] / seconds:.0f} chunks/s (the model alone, one call at a time: "
              f"{32 * 1000 / embed_ms:.0f}) |", flush=True)
    await upstream.stop()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--other-factor", type=int, default=10, help="the other tenant's chunks, times the size")
    parser.add_argument("--max-other", type=int, default=300_000, help="a cap on the other tenant's chunks (build time)")
    parser.add_argument("--dimensions", type=int, default=384)
    parser.add_argument("--queries", type=int, default=200, help="queries per method and size")
    parser.add_argument("--pages", type=int, default=100)
    parser.add_argument("--embed-ms", type=float, default=100.0, help="the fake model's time per embeddings call")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print("| chunks of the searching tenant | beside | semantic p50 / p95 ms | lexical p50 / p95 ms | hybrid p50 / p95 ms |")
        print("|---|---|---|---|---|")
        for size in (int(s) for s in args.sizes.split(",") if s):
            await search_at(size, min(args.max_other, size * args.other_factor), args.dimensions, args.queries, tmp)
        if args.pages:
            print("\n| ingestion | embeddings calls at once | time | throughput |")
            print("|---|---|---|---|")
            await ingestion(args.pages, args.embed_ms, args.dimensions, tmp)


if __name__ == "__main__":
    asyncio.run(main())
