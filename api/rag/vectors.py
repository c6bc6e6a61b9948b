"""Chunks and their vectors: what the documents and search code asks of the vector store,
whichever engine holds them (`engine.py`): Qdrant Edge in-process by default, a Qdrant server
when `dependencies.qdrant.url` is set.

Each point carries a dense vector (the embedding model's) and a sparse lexical one (BM25 term
weights, Qdrant's IDF modifier), its collection and document, and belongs to the collection's
owner (the embedded engine keeps a shard per owner). Every query is filtered to what the caller
may read, and lexical statistics are computed over the same collections of one owner only: a
search reaching several owners' collections (the caller's and public ones) ranks each owner's
chunks lexically by that owner's statistics, then merges them by score, on either engine.
Hybrid search asks the engine for both rankings and fuses them here (`fusion.py`).
"""

from __future__ import annotations

import asyncio
import functools
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from api.rag.engine import DENSE, SPARSE, CollectionOwners, Engine, Hit, PointData, Sparse, Where, point_id
from api.rag.fusion import cap_per_group, dbsf, rrf
from api.rag.schemas import FusionMethod, MetadataFilter, SearchMethod
from api.settings import QdrantSettings

# The engines' libraries are imported only with documents on (VectorStore, at startup) and by
# the code that talks to them, never with this module.
if TYPE_CHECKING:
    from api.rag.lexical import LexicalAnalyzer

__all__ = ["NewChunk", "Scope", "SearchQuery", "StoredChunk", "VectorStore", "point_id"]

CANDIDATES = 4  # candidates fetched per result when results are fused or capped per document
MAX_CANDIDATES = 1000


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
    optionally only of these documents. Documents still being ingested are never reached.
    `owners`: each collection's owner."""

    collection_ids: list[int]
    document_ids: list[int]
    owners: dict[int, int]

    def by_owner(self) -> dict[int, list[int]]:
        grouped: dict[int, list[int]] = {}
        for collection_id in self.collection_ids:
            grouped.setdefault(self.owners[collection_id], []).append(collection_id)
        return grouped


@dataclass(frozen=True)
class SearchQuery:
    method: SearchMethod
    text: str
    vector: list[float] | None
    metadata_filter: MetadataFilter | None
    limit: int
    offset: int
    score_threshold: float = 0.0
    fusion: FusionMethod = FusionMethod.rrf
    rrf_k: int = 60
    semantic_weight: float = 1.0
    lexical_weight: float = 1.0
    max_chunks_per_document: int | None = None


def _reversed(metadata: dict[str, Any]) -> dict[str, str]:
    # Qdrant matches prefixes natively; "ends with" is a prefix of the reversed value.
    return {key: value[::-1] for key, value in metadata.items() if isinstance(value, str)}


def _stored(payload: dict[str, Any]) -> StoredChunk:
    return StoredChunk(
        collection_id=abs(payload["collection_id"]), document_id=payload["document_id"], chunk_id=payload["chunk_id"],
        content=payload["content"], metadata=payload.get("metadata") or {}, created=payload.get("created", 0),
    )


def _identity(payload: dict[str, Any]) -> tuple[int, int]:
    return payload["document_id"], payload["chunk_id"]


def build_engine(settings: QdrantSettings, collection: str) -> Engine:
    if settings.url is not None:
        from api.rag.client_engine import server_engine

        return server_engine(settings.url, settings.api_key, collection)
    from api.rag.edge_engine import EdgeEngine

    assert settings.path is not None
    return EdgeEngine(settings.path, collection, settings.open_shards)


class VectorStore:
    """Opens its engine on first use: a deployment without documents never touches it (an
    embedded folder can be held by one process only)."""

    def __init__(
        self, settings: QdrantSettings | None, collection: str, enabled: bool = True, lexical_language: str = "english",
        engine: Engine | None = None, owners: CollectionOwners | None = None,
    ) -> None:
        """`engine`: one already built (the contract tests); else built from `settings`.
        `owners`: each collection's owner, from the database, for an upgrade that moves chunks
        (`Engine.upgrade`); without it, a store in an earlier layout is refused."""
        self._settings = settings
        self._owners = owners
        self._upgraded = owners is None
        self._upgrade_lock = asyncio.Lock()
        self._collection = collection
        self._lexical_language = lexical_language
        self._enabled = enabled
        if enabled and engine is None:
            # Documents on: imported at startup, not by a first search on the event loop.
            assert settings is not None
            importlib.import_module("qdrant_client" if settings.url is not None else "qdrant_edge")
        self._engine = engine

    @functools.cached_property
    def _lexical(self) -> LexicalAnalyzer:
        from api.rag.lexical import LexicalAnalyzer

        return LexicalAnalyzer(self._lexical_language)

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            assert self._settings is not None
            self._engine = build_engine(self._settings, self._collection)
        return self._engine

    async def _ready(self) -> Engine:
        """The engine, its store upgraded first if an earlier version wrote it."""
        if not self._upgraded:
            async with self._upgrade_lock:
                if not self._upgraded:
                    assert self._owners is not None
                    await self.engine.upgrade(self._owners)
                    self._upgraded = True
        return self.engine

    async def close(self) -> None:
        if self._engine is not None:
            await self._engine.close()

    async def ensure(self, dimensions: int) -> None:
        """Create the store on first use, sized for the embedding model."""
        await (await self._ready()).ensure(dimensions)

    async def upsert(
        self, owner: int, collection_id: int, document_id: int, chunks: list[NewChunk], vectors: list[list[float]], ready: bool,
        created: int,
    ) -> None:
        """`owner`: the collection's."""
        await self.ensure(len(vectors[0]))
        points = []
        for chunk, vector in zip(chunks, vectors, strict=True):
            sparse = self._lexical.document_weights(chunk.content)
            points.append(PointData(
                id=point_id(document_id, chunk.chunk_id), dense=vector, sparse=Sparse(*sparse),
                payload={
                    # Until its document is ready, a chunk's collection is negated: out of every
                    # search (which matches positive ids) at the cost of no extra condition.
                    "collection_id": collection_id if ready else -collection_id,
                    "document_id": document_id, "chunk_id": chunk.chunk_id, "content": chunk.content, "metadata": chunk.metadata,
                    "reversed": _reversed(chunk.metadata), "created": created,
                },
            ))
        await self.engine.upsert(owner, points)
        if ready:
            self.engine.written()

    async def _exists(self) -> bool:
        return self._enabled and await (await self._ready()).exists()

    @staticmethod
    def _where(owner: int | None, **fields: int) -> Where:
        # A collection's chunks: searchable ones and those of documents still ingesting.
        return Where({key: [value, -value] if key == "collection_id" else [value] for key, value in fields.items()},
                     owners=None if owner is None else (owner,))

    async def mark_ready(self, owner: int, collection_id: int, document_id: int) -> None:
        """Make a document's chunks searchable, all at once."""
        if await self._exists():
            await self.engine.set_payload(self._where(owner, document_id=document_id), {"collection_id": collection_id})
            self.engine.written()

    async def delete(self, owner: int | None, **fields: int) -> None:
        """Delete every point of `owner` (None: of anyone) matching all `fields` (collection_id,
        document_id, chunk_id)."""
        if await self._exists():
            await self.engine.delete(self._where(owner, **fields))

    async def sweep(self) -> None:
        """Once after start-up: let go of what owners with no collection left kept (a user
        deleted by an earlier version, or whose shard was in use then): SQLite may give their
        id to the next user made. Not at first use: that can be inside a request's write
        transaction, which this read would wait on (SQLite: one writer)."""
        if self._owners is None or not await self._exists():
            return
        # Those kept before the owners are read: one whose first document is being stored
        # meanwhile is not taken for a leftover.
        kept = await self.engine.owners_kept()
        for owner in kept - set((await self._owners()).values()):
            await self.engine.drop_owner(owner)

    async def drop_owner(self, owner: int) -> None:
        """Once every point of the owner is deleted: let go of what the engine kept for them."""
        if await self._exists():
            await self.engine.drop_owner(owner)

    async def count(self, owner: int | None = None, **fields: int) -> int:
        return await self.engine.count(self._where(owner, **fields)) if await self._exists() else 0

    async def chunks(self, owner: int, document_id: int, offset: int, limit: int) -> list[StoredChunk]:
        """A document's chunks in id order."""
        if not await self._exists():
            return []
        found: list[StoredChunk] = []
        start: int | None = point_id(document_id, 0)
        end = point_id(document_id + 1, 0)
        skipped = 0
        while len(found) < limit and start is not None:
            points, start = await self.engine.scroll(self._where(owner, document_id=document_id), start, min(256, offset + limit))
            for identity, payload in points:
                if identity >= end:
                    continue
                if skipped < offset:
                    skipped += 1
                    continue
                found.append(_stored(payload))
                if len(found) == limit:
                    break
        return found

    async def chunk(self, owner: int, document_id: int, chunk_id: int) -> StoredChunk | None:
        if not await self._exists():
            return None
        payload = await self.engine.retrieve(point_id(document_id, chunk_id), (owner,))
        return _stored(payload) if payload else None

    async def search(self, scope: Scope, query: SearchQuery) -> list[tuple[StoredChunk, float]]:
        if not scope.collection_ids or not await self._exists():
            return []
        # Tenancy first: whatever the caller's own filters say, only these collections; and
        # lexical statistics over them alone.
        owners = scope.by_owner()
        tenancy: dict[str, list[int]] = {"collection_id": scope.collection_ids}
        if scope.document_ids:
            tenancy["document_id"] = scope.document_ids
        where = Where(tenancy, query.metadata_filter, tuple(owners))
        depth = query.offset + query.limit
        fused = query.method is SearchMethod.hybrid
        fetch = min(MAX_CANDIDATES, depth * CANDIDATES) if fused or query.max_chunks_per_document else depth
        lists: list[list[Hit]] = []
        weights: list[float] = []
        if query.method is not SearchMethod.lexical:
            assert query.vector is not None
            threshold = query.score_threshold or None if query.method is SearchMethod.semantic else None
            lists.append(await self.engine.nearest(DENSE, query.vector, where, fetch, threshold, None))
            weights.append(query.semantic_weight)
        if query.method is not SearchMethod.semantic:
            sparse = Sparse(*self._lexical.query_weights(query.text))
            lists.append(await self._lexical_hits(sparse, owners, tenancy, query.metadata_filter, fetch) if sparse.indices else [])
            weights.append(query.lexical_weight)
        if not fused:
            ranked: list[Hit] = lists[0]
        elif query.fusion is FusionMethod.dbsf:
            ranked = dbsf(lists, weights, key=_identity)
        else:
            ranked = rrf(lists, weights, max(1, query.rrf_k), key=_identity)
        ranked = cap_per_group(ranked, query.max_chunks_per_document, group=lambda payload: payload["document_id"])
        return [(_stored(payload), score) for payload, score in ranked[query.offset:depth]]

    async def _lexical_hits(
        self, sparse: Sparse, owners: dict[int, list[int]], tenancy: dict[str, list[int]], metadata: MetadataFilter | None,
        fetch: int,
    ) -> list[Hit]:
        """The best `fetch` chunks by words, each owner's scored with IDF over that owner's
        searched collections (one query per owner), merged by score."""
        hits: list[Hit] = []
        for owner, collection_ids in owners.items():
            mine = {**tenancy, "collection_id": collection_ids}
            hits += await self.engine.nearest(
                SPARSE, sparse, Where(mine, metadata, (owner,)), fetch, None, Where(mine, owners=(owner,)))
        return sorted(hits, key=lambda hit: -hit[1])[:fetch] if len(owners) > 1 else hits
