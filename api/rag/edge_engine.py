"""The chunk store in-process on Qdrant Edge (`qdrant-edge-py`): Qdrant's own engine, with HNSW,
payload indexes and sparse vectors, in a folder under `dependencies.qdrant.path`.

Edge runs no background services: this engine decides when to index. Points are searchable
as soon as they are written (a segment not yet indexed is scanned, through the payload index
of its tenant field). Whenever a document is made searchable, `written()` asks one background
thread to run the optimiser, which builds the HNSW graph of a segment grown past Qdrant's
indexing threshold (10 MB of vectors) and does nothing, at once, otherwise. Only one run at a
time; a request during a run makes one more run after it. Segments are bounded (SEGMENT_KB)
because the optimiser holds Python's GIL while it runs: each run then lasts a second or two
per ~20,000 new chunks, instead of minutes once a single segment has grown large.

A folder can be held by one process: several processes need a Qdrant server.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from api.errors import InvalidRequestError
from api.rag.engine import DENSE, SPARSE, Hit, PointData, Sparse, Where
from api.rag.schemas import ComparisonFilter, ComparisonType, CompoundFilter, CompoundType, MetadataFilter

if TYPE_CHECKING:
    import qdrant_edge as edge

log = logging.getLogger("tollgate.vectors")

SHARD_FOLDER = "edge"
DIMENSIONS_FILE = "edge.json"
SEARCH_THREADS = 4
# The optimiser holds Python's GIL while it runs (qdrant-edge-py 0.9): the whole process waits.
# Bounded segments keep each run short: the HNSW graph of one segment of ~30 MB of vectors
# (~20,000 × 384-d) is built in 1-2 s here, where one segment of 100,000 took 104 s; searches
# over the segments stay fast (docs/performance.md).
SEGMENT_KB = 30_000
SEGMENTS = 8


def metadata_condition(node: MetadataFilter) -> Any:
    import qdrant_edge as edge

    if isinstance(node, CompoundFilter):
        children = [metadata_condition(child) for child in node.filters]
        return edge.Filter(must=children) if node.type is CompoundType.and_ else edge.Filter(should=children)
    assert isinstance(node, ComparisonFilter)
    value, key = node.value, f'metadata."{node.key}"'  # one flat key, dots included
    if node.type is ComparisonType.eq:
        if isinstance(value, float):  # an equal-bounds range, which also matches the integer 3 for 3.0
            return edge.FieldCondition(key=key, range=edge.RangeFloat(gte=value, lte=value))
        return edge.FieldCondition(key=key, match=edge.MatchValue(value))
    text = str(value)
    if node.type is ComparisonType.sw:
        return edge.FieldCondition(key=key, match=edge.MatchPrefix(text))
    if node.type is ComparisonType.ew:  # "ends with" is a prefix of the reversed value
        return edge.FieldCondition(key=f'reversed."{node.key}"', match=edge.MatchPrefix(text[::-1]))
    return edge.FieldCondition(key=key, match=edge.MatchSubstring(text))


def to_filter(where: Where) -> edge.Filter:
    import qdrant_edge as edge

    must: list[Any] = [edge.FieldCondition(key=key, match=edge.MatchAny(values)) for key, values in where.fields.items()]
    if where.metadata is not None:
        must.append(metadata_condition(where.metadata))
    return edge.Filter(must=must)


def shard_config(dimensions: int) -> edge.EdgeConfig:
    import qdrant_edge as edge

    return edge.EdgeConfig(
        vectors={DENSE: edge.EdgeVectorParams(size=dimensions, distance=edge.Distance.Cosine)},
        sparse_vectors={SPARSE: edge.EdgeSparseVectorParams(modifier=edge.Modifier.Idf)},
        optimizers=edge.EdgeOptimizersConfig(max_segment_size=SEGMENT_KB, default_segment_number=SEGMENTS),
    )


def create_shard(path: str, dimensions: int) -> edge.EdgeShard:
    """A new shard, its tenant field indexed (with HNSW links of its own per collection) and
    its document field indexed for lookups only."""
    import qdrant_edge as edge

    shard = edge.EdgeShard.create(path, shard_config(dimensions))
    shard.update(edge.UpdateOperation.create_field_index(
        "collection_id", edge.IntegerIndexParams(lookup=True, range=False, is_principal=True)))
    shard.update(edge.UpdateOperation.create_field_index(
        "document_id", edge.IntegerIndexParams(lookup=True, range=False, enable_hnsw=False)))
    return shard


def upsert_operation(points: list[PointData]) -> edge.UpdateOperation:
    import qdrant_edge as edge

    return edge.UpdateOperation.upsert_points([
        edge.Point(id=point.id, payload=point.payload,
                   vector={DENSE: point.dense, SPARSE: edge.SparseVector(indices=point.sparse.indices, values=point.sparse.values)})
        for point in points
    ])


class EdgeEngine:
    def __init__(self, path: str, collection: str) -> None:
        """`path`: the embedded store's folder; `collection`: the name an earlier version's
        qdrant-client local mode gave its data there (moved over on first open, `upgrade.py`)."""
        self._root = path
        self._path = os.path.join(path, SHARD_FOLDER)
        self._collection = collection
        self._shard: edge.EdgeShard | None = None
        self._opened = False
        self._dimensions: int | None = None
        self._threads = ThreadPoolExecutor(max_workers=SEARCH_THREADS, thread_name_prefix="qdrant-edge")
        self._open_lock = threading.Lock()
        self._optimiser_lock = threading.Lock()
        self._optimiser: threading.Thread | None = None  # while a run is asked for or going on
        self._optimise_again = False
        self._closing = False

    async def _run(self, function: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._threads, function, *args)

    def _open(self) -> edge.EdgeShard | None:
        """The shard, if there is one yet (created by the first `ensure`)."""
        import qdrant_edge as edge

        from api.rag.upgrade import migrate_local_mode

        with self._open_lock:
            if not self._opened:
                if not os.path.isdir(self._path):
                    migrate_local_mode(self._root, self._collection, self._path)
                if os.path.isdir(self._path):
                    self._dimensions = read_dimensions(self._root)
                    # With the configuration of this version (its segment bounds), when known.
                    config = shard_config(self._dimensions) if self._dimensions else None
                    self._shard = edge.EdgeShard.load(self._path, config)
                self._opened = True
            return self._shard

    def _ensure(self, dimensions: int) -> None:
        self._open()
        with self._open_lock:
            if self._shard is None:
                write_dimensions(self._root, dimensions)  # first: a shard is never left without its size
                self._shard = create_shard(self._path, dimensions)
                self._dimensions = dimensions
        if self._dimensions != dimensions:
            raise InvalidRequestError(
                f"The vector store holds {self._dimensions}-dimension vectors; the embedding model gives {dimensions}"
            )

    async def ensure(self, dimensions: int) -> None:
        if self._dimensions != dimensions or self._shard is None:
            await self._run(self._ensure, dimensions)

    async def exists(self) -> bool:
        return (self._shard if self._opened else await self._run(self._open)) is not None

    def _ready(self) -> edge.EdgeShard:
        assert self._shard is not None
        return self._shard

    async def upsert(self, points: list[PointData]) -> None:
        await self._run(lambda: self._ready().update(upsert_operation(points)))

    async def set_payload(self, where: Where, payload: dict[str, Any]) -> None:
        import qdrant_edge as edge

        await self._run(lambda: self._ready().update(edge.UpdateOperation.set_payload_by_filter(to_filter(where), payload)))

    async def delete(self, where: Where) -> None:
        import qdrant_edge as edge

        await self._run(lambda: self._ready().update(edge.UpdateOperation.delete_points_by_filter(to_filter(where))))

    async def count(self, where: Where) -> int:
        import qdrant_edge as edge

        return await self._run(lambda: self._ready().count(edge.CountRequest(exact=True, filter=to_filter(where))))

    async def scroll(self, where: Where, start: int, limit: int) -> tuple[list[tuple[int, dict[str, Any]]], int | None]:
        import qdrant_edge as edge

        request = edge.ScrollRequest(offset=start, limit=limit, filter=to_filter(where), with_payload=True, with_vector=False)
        records, following = await self._run(lambda: self._ready().scroll(request))
        return [(int(r.id), r.payload or {}) for r in records], None if following is None else int(following)

    async def retrieve(self, point: int) -> dict[str, Any] | None:
        records = await self._run(lambda: self._ready().retrieve([point], True, False))
        return (records[0].payload or {}) if records else None

    async def nearest(
        self, using: str, vector: list[float] | Sparse, where: Where, limit: int, score_threshold: float | None,
        idf_corpus: Where | None,
    ) -> list[Hit]:
        import qdrant_edge as edge

        params = None
        query: Any = vector
        if isinstance(vector, Sparse):
            query = edge.SparseVector(indices=vector.indices, values=vector.values)
            if idf_corpus is not None:
                params = edge.SearchParams(idf=edge.IdfParams(corpus=to_filter(idf_corpus)))
        request = edge.QueryRequest(
            limit=limit, query=edge.Query.Nearest(query, using=using), filter=to_filter(where),
            score_threshold=score_threshold, params=params, with_payload=True, with_vector=False,
        )
        points = await self._run(lambda: self._ready().query(request))
        return [(point.payload or {}, float(point.score)) for point in points]

    # indexing

    def written(self) -> None:
        """Run the optimiser in the background (one run at a time; a request during a run
        makes one more run after it)."""
        with self._optimiser_lock:
            if self._shard is None or self._closing:
                return
            self._optimise_again = True
            if self._optimiser is None:
                self._optimiser = threading.Thread(target=self._optimise, name="qdrant-edge-optimiser", daemon=True)
                self._optimiser.start()

    def _optimise(self) -> None:
        while True:
            with self._optimiser_lock:
                if not self._optimise_again or self._closing:
                    self._optimiser = None
                    return
                self._optimise_again = False
            try:
                self._ready().optimize()
            except Exception:  # noqa: BLE001  (indexing is an optimisation: searches still scan)
                log.exception("the vector store's optimiser failed")

    async def optimise_now(self) -> None:
        """Index now and wait (benchmarks)."""
        optimiser = self._optimiser
        if optimiser is not None:
            await asyncio.to_thread(optimiser.join)
        await self._run(lambda: self._ready().optimize())

    async def close(self) -> None:
        self._closing = True
        optimiser = self._optimiser
        if optimiser is not None:
            await asyncio.to_thread(optimiser.join)  # an optimisation in progress cannot be interrupted
        if self._shard is not None:
            shard, self._shard = self._shard, None
            await self._run(shard.close)
        self._threads.shutdown(wait=False)


def read_dimensions(root: str) -> int | None:
    """The dense vectors' size, noted beside the shard when it was created."""
    try:
        with open(os.path.join(root, DIMENSIONS_FILE)) as file:
            return int(json.load(file)["dimensions"])
    except FileNotFoundError:
        return None


def write_dimensions(root: str, dimensions: int) -> None:
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, DIMENSIONS_FILE), "w") as file:
        json.dump({"dimensions": dimensions}, file)
