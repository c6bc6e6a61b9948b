"""Chunks in Qdrant: one collection holds every tenant's chunks, each point tagged with its
collection and document, and every query is filtered to what the caller may read.

Each point carries a dense vector (the embedding model's) and a sparse lexical one (BM25
term weights, Qdrant's IDF modifier). Hybrid search fuses both with reciprocal rank fusion
inside Qdrant. The same code drives local mode (a path) and a Qdrant server (a URL).
"""

from __future__ import annotations

import asyncio
import functools
import importlib
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from api.errors import InvalidRequestError
from api.rag.schemas import (
    ComparisonFilter,
    ComparisonType,
    CompoundFilter,
    CompoundType,
    MetadataFilter,
    SearchMethod,
)
from api.settings import QdrantSettings

# qdrant-client (with numpy) costs a process some 55 MB: it is imported only with documents on
# (VectorStore, at startup) and by the code that talks to Qdrant, never with this module.
if TYPE_CHECKING:
    from qdrant_client import AsyncQdrantClient, QdrantClient, models

    from api.rag.lexical import LexicalAnalyzer

DENSE = "dense"
SPARSE = "lexical"
CHUNK_BITS = 24  # a point's id: document id × 2²⁴ + chunk id


def point_id(document_id: int, chunk_id: int) -> int:
    return (document_id << CHUNK_BITS) + chunk_id


@dataclass(frozen=True)
class NewChunk:
    chunk_id: int
    content: str
    metadata: dict[str, Any]


@dataclass(frozen=True)
class StoredChunk:
    collection_id: int
    document_id: int
    chunk_id: int
    content: str
    metadata: dict[str, Any]
    created: int


@dataclass(frozen=True)
class Scope:
    """What a search may reach: chunks of these collections (already checked readable),
    optionally only of these documents. Documents still being ingested are never reached."""

    collection_ids: list[int]
    document_ids: list[int]


class LocalQdrant:
    """Qdrant's local mode with the async client's methods, run in one thread of its own.
    Local mode searches by looping over every point in Python: on the event loop, a search
    over many chunks would stall every other request of the process."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qdrant-local")
        self._client: QdrantClient | None = None

    def _sync(self) -> QdrantClient:
        from qdrant_client import QdrantClient

        if self._client is None:
            self._client = QdrantClient(path=self._path)
        return self._client

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            method = functools.partial(lambda: getattr(self._sync(), name)(*args, **kwargs))
            return await asyncio.get_running_loop().run_in_executor(self._executor, method)

        return call

    async def close(self) -> None:
        if self._client is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, self._client.close)
        self._executor.shutdown(wait=False)


def build_client(settings: QdrantSettings) -> AsyncQdrantClient:
    from qdrant_client import AsyncQdrantClient

    if settings.url is not None:
        return AsyncQdrantClient(url=settings.url, api_key=settings.api_key)
    assert settings.path is not None
    return LocalQdrant(settings.path)  # type: ignore[return-value]  (the same methods, awaited)


def _reversed(metadata: dict[str, Any]) -> dict[str, str]:
    # Qdrant matches prefixes natively; "ends with" is a prefix of the reversed value.
    return {key: value[::-1] for key, value in metadata.items() if isinstance(value, str)}


def _condition(node: MetadataFilter) -> models.Condition:
    from qdrant_client import models

    if isinstance(node, CompoundFilter):
        children = [_condition(child) for child in node.filters]
        return models.Filter(must=children) if node.type is CompoundType.and_ else models.Filter(should=children)
    assert isinstance(node, ComparisonFilter)
    # Quoted: a metadata key is one flat key, dots included ("a.b", "a..b" or ".a" would
    # otherwise be read as a nested path, or refused by Qdrant's path parser: a 500).
    value, key = node.value, f'metadata."{node.key}"'
    if node.type is ComparisonType.eq:
        # Qdrant matches only strings, integers and booleans exactly; a float (3.5, or 3.0 as
        # JSON gives it) is an equal-bounds range, which also matches the integer 3.
        if isinstance(value, float):
            return models.FieldCondition(key=key, range=models.Range(gte=value, lte=value))
        return models.FieldCondition(key=key, match=models.MatchValue(value=value))  # type: ignore[arg-type]
    text = str(value)
    if node.type is ComparisonType.sw:
        return models.FieldCondition(key=key, match=models.MatchPrefix(prefix=text))
    if node.type is ComparisonType.ew:
        return models.FieldCondition(key=f'reversed."{node.key}"', match=models.MatchPrefix(prefix=text[::-1]))
    return models.FieldCondition(key=key, match=models.MatchSubstring(substring=text))


class VectorStore:
    """Opens Qdrant on first use: a deployment without documents never touches it (a local
    folder can be held by one process only)."""

    def __init__(self, settings: QdrantSettings, collection: str, enabled: bool = True, lexical_language: str = "english") -> None:
        self._settings = settings
        self._lexical_language = lexical_language
        if enabled:
            # Documents on: imported at startup, not by a first search on the event loop (~1 s).
            importlib.import_module("qdrant_client")
        self._opened: AsyncQdrantClient | None = None
        self._local = settings.url is None  # local mode builds no payload indexes
        self._enabled = enabled
        self._collection = collection
        self._dimensions: int | None = None

    @functools.cached_property
    def _lexical(self) -> LexicalAnalyzer:
        from api.rag.lexical import LexicalAnalyzer

        return LexicalAnalyzer(self._lexical_language)

    @property
    def _client(self) -> AsyncQdrantClient:
        if self._opened is None:
            self._opened = build_client(self._settings)
        return self._opened

    async def close(self) -> None:
        if self._opened is not None:
            await self._opened.close()

    async def ensure(self, dimensions: int) -> None:
        """Create the Qdrant collection on first use, sized for the embedding model."""
        from qdrant_client import models

        if self._dimensions == dimensions:
            return
        if not await self._client.collection_exists(self._collection):
            await self._client.create_collection(
                self._collection,
                vectors_config={DENSE: models.VectorParams(size=dimensions, distance=models.Distance.COSINE)},
                sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
            )
            for field, schema in () if self._local else (("collection_id", models.PayloadSchemaType.INTEGER),
                                  ("document_id", models.PayloadSchemaType.INTEGER)):
                await self._client.create_payload_index(self._collection, field, field_schema=schema)
        else:
            info = await self._client.get_collection(self._collection)
            vectors = info.config.params.vectors
            size = vectors[DENSE].size if isinstance(vectors, dict) else None
            if size != dimensions:
                raise InvalidRequestError(
                    f"The vector store holds {size}-dimension vectors; the embedding model gives {dimensions}"
                )
        self._dimensions = dimensions

    async def upsert(
        self, collection_id: int, document_id: int, chunks: list[NewChunk], vectors: list[list[float]], ready: bool, created: int
    ) -> None:
        from qdrant_client import models

        await self.ensure(len(vectors[0]))
        points = [
            models.PointStruct(
                id=point_id(document_id, chunk.chunk_id),
                vector={DENSE: vector, SPARSE: self._lexical.document_vector(chunk.content)},
                payload={
                    # Until its document is ready, a chunk's collection is negated: out of every
                    # search (which matches positive ids) at the cost of no extra condition.
                    "collection_id": collection_id if ready else -collection_id,
                    "document_id": document_id, "chunk_id": chunk.chunk_id, "content": chunk.content, "metadata": chunk.metadata,
                    "reversed": _reversed(chunk.metadata), "created": created,
                },
            )
            for chunk, vector in zip(chunks, vectors, strict=True)
        ]
        await self._client.upsert(self._collection, points=points, wait=True)

    async def _exists(self) -> bool:
        if not self._enabled:
            return False
        return self._dimensions is not None or await self._client.collection_exists(self._collection)

    async def mark_ready(self, collection_id: int, document_id: int) -> None:
        """Make a document's chunks searchable, all at once."""
        if await self._exists():
            await self._client.set_payload(
                self._collection, payload={"collection_id": collection_id}, points=self._filter(document_id=document_id), wait=True
            )

    @staticmethod
    def _filter(**fields: int) -> models.Filter:
        from qdrant_client import models

        conditions = []
        for key, value in fields.items():
            # A collection's chunks: searchable ones and those of documents still ingesting.
            match = models.MatchAny(any=[value, -value]) if key == "collection_id" else models.MatchValue(value=value)
            conditions.append(models.FieldCondition(key=key, match=match))
        return models.Filter(must=conditions)

    async def delete(self, **fields: int) -> None:
        """Delete every point matching all `fields` (collection_id, document_id, chunk_id)."""
        from qdrant_client import models

        if await self._exists():
            await self._client.delete(self._collection, points_selector=models.FilterSelector(filter=self._filter(**fields)), wait=True)

    async def count(self, **fields: int) -> int:
        if not await self._exists():
            return 0
        return (await self._client.count(self._collection, count_filter=self._filter(**fields), exact=True)).count

    async def chunks(self, document_id: int, offset: int, limit: int) -> list[StoredChunk]:
        """A document's chunks in id order."""
        if not await self._exists():
            return []
        found: list[StoredChunk] = []
        start: Any = point_id(document_id, 0)
        end = point_id(document_id + 1, 0)
        skipped = 0
        while len(found) < limit:
            points, start = await self._client.scroll(
                self._collection, scroll_filter=self._filter(document_id=document_id), limit=min(256, offset + limit),
                offset=start, with_payload=True, with_vectors=False,
            )
            for point in points:
                if int(point.id) >= end:
                    continue
                if skipped < offset:
                    skipped += 1
                    continue
                found.append(self._stored(point.payload or {}))
                if len(found) == limit:
                    break
            if start is None:
                break
        return found

    async def chunk(self, document_id: int, chunk_id: int) -> StoredChunk | None:
        if not await self._exists():
            return None
        points = await self._client.retrieve(self._collection, ids=[point_id(document_id, chunk_id)], with_payload=True)
        return self._stored(points[0].payload or {}) if points else None

    @staticmethod
    def _stored(payload: dict[str, Any]) -> StoredChunk:
        return StoredChunk(
            collection_id=abs(payload["collection_id"]), document_id=payload["document_id"], chunk_id=payload["chunk_id"],
            content=payload["content"], metadata=payload.get("metadata") or {}, created=payload.get("created", 0),
        )

    async def search(
        self,
        scope: Scope,
        method: SearchMethod,
        query_text: str,
        query_vector: list[float] | None,
        metadata_filter: MetadataFilter | None,
        limit: int,
        offset: int,
        rrf_k: int,
        score_threshold: float,
    ) -> list[tuple[StoredChunk, float]]:
        from qdrant_client import models

        if not scope.collection_ids or not await self._exists():
            return []
        # Tenancy first: whatever the caller's own filters say, only these collections.
        must: list[models.Condition] = [
            models.FieldCondition(key="collection_id", match=models.MatchAny(any=scope.collection_ids)),
        ]
        if scope.document_ids:
            must.append(models.FieldCondition(key="document_id", match=models.MatchAny(any=scope.document_ids)))
        if metadata_filter is not None:
            must.append(_condition(metadata_filter))
        where = models.Filter(must=must)
        sparse = self._lexical.query_vector(query_text)
        if method is SearchMethod.semantic:
            assert query_vector is not None
            result = await self._client.query_points(
                self._collection, query=query_vector, using=DENSE, query_filter=where, limit=limit, offset=offset,
                score_threshold=score_threshold or None, with_payload=True,
            )
        elif method is SearchMethod.lexical:
            if not sparse.indices:
                return []
            result = await self._client.query_points(
                self._collection, query=sparse, using=SPARSE, query_filter=where, limit=limit, offset=offset, with_payload=True,
            )
        else:
            assert query_vector is not None
            depth = offset + limit
            prefetch = [models.Prefetch(query=query_vector, using=DENSE, filter=where, limit=depth * 2)]
            if sparse.indices:
                prefetch.append(models.Prefetch(query=sparse, using=SPARSE, filter=where, limit=depth * 2))
            result = await self._client.query_points(
                self._collection, prefetch=prefetch, query=models.RrfQuery(rrf=models.Rrf(k=rrf_k)),
                limit=limit, offset=offset, with_payload=True,
            )
        return [(self._stored(point.payload or {}), float(point.score)) for point in result.points]
