"""The chunk store on a Qdrant server, through qdrant-client (`dependencies.qdrant.url`).

One collection holds every owner's chunks: the collections named in each filter keep tenants
apart, and the server's payload index on `collection_id` keeps each query to their points, so
the owners the engine is told about need no filter of their own.

qdrant-client's local mode (a folder, Python all the way down) speaks the same API: the
contract tests use it to stand in for a server, and `upgrade.py` reads the folders that
earlier versions of Tollgate wrote with it.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from api.errors import InvalidRequestError
from api.rag.engine import DENSE, SPARSE, CollectionOwners, Hit, PointData, Sparse, Where
from api.rag.schemas import ComparisonFilter, ComparisonType, CompoundFilter, CompoundType, MetadataFilter

if TYPE_CHECKING:
    from qdrant_client import AsyncQdrantClient, QdrantClient, models


class LocalQdrant:
    """qdrant-client's local mode with the async client's methods, run in one thread of its
    own: it scores every point in Python, and would otherwise stall the event loop."""

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


def metadata_condition(node: MetadataFilter) -> models.Condition:
    from qdrant_client import models

    if isinstance(node, CompoundFilter):
        children = [metadata_condition(child) for child in node.filters]
        return models.Filter(must=children) if node.type is CompoundType.and_ else models.Filter(should=children)
    assert isinstance(node, ComparisonFilter)
    # Quoted: a metadata key is one flat key, dots included ("a.b" would otherwise be a path).
    value, key = node.value, f'metadata."{node.key}"'
    if node.type is ComparisonType.eq:
        # Qdrant matches only strings, integers and booleans exactly; a float is an equal-bounds range.
        if isinstance(value, float):
            return models.FieldCondition(key=key, range=models.Range(gte=value, lte=value))
        return models.FieldCondition(key=key, match=models.MatchValue(value=value))  # type: ignore[arg-type]
    text = str(value)
    if node.type is ComparisonType.sw:
        return models.FieldCondition(key=key, match=models.MatchPrefix(prefix=text))
    if node.type is ComparisonType.ew:
        return models.FieldCondition(key=f'reversed."{node.key}"', match=models.MatchPrefix(prefix=text[::-1]))
    return models.FieldCondition(key=key, match=models.MatchSubstring(substring=text))


def to_filter(where: Where) -> models.Filter:
    from qdrant_client import models

    must: list[models.Condition] = [
        models.FieldCondition(key=key, match=models.MatchAny(any=values)) for key, values in where.fields.items()
    ]
    if where.metadata is not None:
        must.append(metadata_condition(where.metadata))
    return models.Filter(must=must)


class ClientEngine:
    def __init__(self, client: AsyncQdrantClient, collection: str, payload_indexes: bool = True) -> None:
        self._client = client
        self._collection = collection
        self._payload_indexes = payload_indexes  # local mode builds none
        self._dimensions: int | None = None

    async def ensure(self, dimensions: int) -> None:
        from qdrant_client import models

        if self._dimensions == dimensions:
            return
        if not await self._client.collection_exists(self._collection):
            await self._client.create_collection(
                self._collection,
                vectors_config={DENSE: models.VectorParams(size=dimensions, distance=models.Distance.COSINE)},
                sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
            )
            if self._payload_indexes:
                for field in ("collection_id", "document_id"):
                    await self._client.create_payload_index(
                        self._collection, field, field_schema=models.PayloadSchemaType.INTEGER
                    )
        else:
            info = await self._client.get_collection(self._collection)
            vectors = info.config.params.vectors
            size = vectors[DENSE].size if isinstance(vectors, dict) else None
            if size != dimensions:
                raise InvalidRequestError(
                    f"The vector store holds {size}-dimension vectors; the embedding model gives {dimensions}"
                )
        self._dimensions = dimensions

    async def upgrade(self, owners: CollectionOwners) -> None:
        """Nothing to move: this layout has not changed."""

    async def drop_owner(self, owner: int) -> None:
        """Nothing left: an owner's points are deleted by their collections."""

    async def owners_kept(self) -> set[int]:
        """None: nothing is kept per owner."""
        return set()

    async def exists(self) -> bool:
        return self._dimensions is not None or await self._client.collection_exists(self._collection)

    async def upsert(self, owner: int, points: list[PointData]) -> None:
        from qdrant_client import models

        await self._client.upsert(self._collection, wait=True, points=[
            models.PointStruct(
                id=point.id, payload=point.payload,
                vector={DENSE: point.dense, SPARSE: models.SparseVector(indices=point.sparse.indices, values=point.sparse.values)},
            )
            for point in points
        ])

    async def set_payload(self, where: Where, payload: dict[str, Any]) -> None:
        await self._client.set_payload(self._collection, payload=payload, points=to_filter(where), wait=True)

    async def delete(self, where: Where) -> None:
        from qdrant_client import models

        await self._client.delete(self._collection, points_selector=models.FilterSelector(filter=to_filter(where)), wait=True)

    async def count(self, where: Where) -> int:
        return (await self._client.count(self._collection, count_filter=to_filter(where), exact=True)).count

    async def scroll(self, where: Where, start: int, limit: int) -> tuple[list[tuple[int, dict[str, Any]]], int | None]:
        points, following = await self._client.scroll(
            self._collection, scroll_filter=to_filter(where), limit=limit, offset=start, with_payload=True, with_vectors=False,
        )
        return [(int(p.id), p.payload or {}) for p in points], None if following is None else int(following)  # type: ignore[arg-type]

    async def retrieve(self, point: int, owners: tuple[int, ...] | None) -> dict[str, Any] | None:
        points = await self._client.retrieve(self._collection, ids=[point], with_payload=True)
        return (points[0].payload or {}) if points else None

    async def nearest(
        self, using: str, vector: list[float] | Sparse, where: Where, limit: int, score_threshold: float | None,
        idf_corpus: Where | None,
    ) -> list[Hit]:
        from qdrant_client import models

        query: Any = vector
        params = None
        if isinstance(vector, Sparse):
            query = models.SparseVector(indices=vector.indices, values=vector.values)
            if idf_corpus is not None:
                params = models.SearchParams(idf=models.IdfCorpusParams(corpus=to_filter(idf_corpus)))
        result = await self._client.query_points(
            self._collection, query=query, using=using, query_filter=to_filter(where), limit=limit,
            score_threshold=score_threshold, search_params=params, with_payload=True,
        )
        return [(point.payload or {}, float(point.score)) for point in result.points]

    def written(self) -> None:
        """A server indexes on its own."""

    async def close(self) -> None:
        await self._client.close()


def server_engine(url: str, api_key: str | None, collection: str) -> ClientEngine:
    from qdrant_client import AsyncQdrantClient

    return ClientEngine(AsyncQdrantClient(url=url, api_key=api_key), collection)


def local_engine(path: str, collection: str) -> ClientEngine:
    """qdrant-client's local mode: the tests' stand-in for a server, and the reader of old folders."""
    return ClientEngine(LocalQdrant(path), collection, payload_indexes=False)  # type: ignore[arg-type]
