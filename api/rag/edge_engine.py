"""The chunk store in-process on Qdrant Edge (`qdrant-edge-py`): Qdrant's own engine, with HNSW,
payload indexes and sparse vectors, in a folder under `dependencies.qdrant.path`.

Each owner (the user whose collections hold the chunks) has a shard of their own under
`shards/<owner>` (`edge_shards.py`): a tenant's searches, writes and indexing never touch
another tenant's segments, so another tenant's volume does not slow them, and IDF, computed per
shard, never mixes tenants. A search over several owners' collections (the caller's and public
ones) asks each of their shards and merges the hits by score.

Edge runs no background services: this engine decides when to index. Points are searchable
as soon as they are written (a segment not yet indexed is scanned, through the payload index
of its collection field). Whenever a document is made searchable, `written()` asks one
background thread to run the optimiser on the shards written to, which builds the HNSW graph
of a segment grown past Qdrant's indexing threshold (10 MB of vectors) and does nothing, at
once, otherwise. One run at a time; a write during a run makes one more run of its shard after
it. Segments are bounded (`edge_shards.SEGMENT_KB`) because the optimiser holds Python's GIL
while it runs: each run then lasts a second or two per ~20,000 new chunks, instead of minutes
once a single segment has grown large.

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
from api.rag.edge_shards import Shards, upsert_operation
from api.rag.engine import CollectionOwners, Hit, PointData, Sparse, Where
from api.rag.schemas import ComparisonFilter, ComparisonType, CompoundFilter, CompoundType, MetadataFilter

if TYPE_CHECKING:
    import qdrant_edge as edge

log = logging.getLogger("tollgate.vectors")

SHARDS_FOLDER = "shards"  # one shard per owner (`edge_shards.py`)
DIMENSIONS_FILE = "edge.json"
SEARCH_THREADS = 4
# Owners' shards open at once: each holds the memory maps of its files (hundreds for a large
# shard); a shard closed by this bound is reopened by its owner's next call (0.1-0.3 s).
OPEN_SHARDS = 64


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


class EdgeEngine:
    def __init__(self, path: str, collection: str, open_shards: int = OPEN_SHARDS) -> None:
        """`path`: the embedded store's folder; `collection`: the name an earlier version's
        qdrant-client local mode gave its data there (moved over by `upgrade`, `upgrade.py`);
        `open_shards`: how many owners' shards may stay open at once."""
        self._root = path
        self._collection = collection
        self._shards = Shards(os.path.join(path, SHARDS_FOLDER), open_shards)
        self._checked = False
        self._dimensions: int | None = None
        self._threads = ThreadPoolExecutor(max_workers=SEARCH_THREADS, thread_name_prefix="qdrant-edge")
        self._open_lock = threading.Lock()
        self._optimiser_lock = threading.Lock()
        self._optimiser: threading.Thread | None = None  # while a run is asked for or going on
        self._unindexed: set[int] = set()  # owners written to since their last optimiser run
        self._closing = False

    async def _run(self, function: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._threads, function, *args)

    async def upgrade(self, owners: CollectionOwners) -> None:
        from api.rag.upgrade import split_by_owner, upgrade_needed

        if await self._run(upgrade_needed, self._root, self._collection, self._shards.folder):
            found = await owners()
            await self._run(split_by_owner, self._root, self._collection, self._shards.folder, found)

    async def owners_kept(self) -> set[int]:
        return set(await self._run(self._shards.owners))

    async def drop_owner(self, owner: int) -> None:
        with self._optimiser_lock:
            self._unindexed.discard(owner)
        await self._run(self._shards.drop, owner)

    def _check(self) -> None:
        """Once: the store's vector size, if it has been created (by the first `ensure`)."""
        from api.rag.upgrade import legacy_layout

        with self._open_lock:
            if not self._checked:
                if legacy_layout(self._root, self._collection, self._shards.folder):
                    raise RuntimeError(f"{self._root} holds chunks in an earlier version's layout: upgrade() moves them first")
                self._dimensions = self._shards.dimensions = read_dimensions(self._root)
                self._checked = True

    def _ensure(self, dimensions: int) -> None:
        self._check()
        with self._open_lock:
            if self._dimensions is None:
                write_dimensions(self._root, dimensions)
                os.makedirs(self._shards.folder, exist_ok=True)
                self._dimensions = self._shards.dimensions = dimensions
        if self._dimensions != dimensions:
            raise InvalidRequestError(
                f"The vector store holds {self._dimensions}-dimension vectors; the embedding model gives {dimensions}"
            )

    async def ensure(self, dimensions: int) -> None:
        if self._dimensions != dimensions:
            await self._run(self._ensure, dimensions)

    async def exists(self) -> bool:
        if not self._checked:
            await self._run(self._check)
        return self._dimensions is not None

    def _owners(self, owners: tuple[int, ...] | None) -> list[int]:
        return list(owners) if owners is not None else self._shards.owners()

    def _each(self, where: Where, action: Any) -> list[Any]:
        """`action(shard)` on each shard of `where`'s owners that exists, one after the other."""
        results = []
        for owner in self._owners(where.owners):
            with self._shards.use(owner) as shard:
                if shard is not None:
                    results.append(action(shard))
        return results

    def _upsert(self, owner: int, points: list[PointData]) -> None:
        with self._shards.use(owner, create=True) as shard:
            assert shard is not None
            shard.update(upsert_operation(points))
        with self._optimiser_lock:
            self._unindexed.add(owner)

    async def upsert(self, owner: int, points: list[PointData]) -> None:
        await self._run(self._upsert, owner, points)

    async def set_payload(self, where: Where, payload: dict[str, Any]) -> None:
        import qdrant_edge as edge

        operation = edge.UpdateOperation.set_payload_by_filter(to_filter(where), payload)
        await self._run(self._each, where, lambda shard: shard.update(operation))
        with self._optimiser_lock:  # its segments change: payload indexes, and HNSW links per collection
            self._unindexed.update(self._owners(where.owners))

    async def delete(self, where: Where) -> None:
        import qdrant_edge as edge

        operation = edge.UpdateOperation.delete_points_by_filter(to_filter(where))
        await self._run(self._each, where, lambda shard: shard.update(operation))

    async def count(self, where: Where) -> int:
        import qdrant_edge as edge

        request = edge.CountRequest(exact=True, filter=to_filter(where))
        return sum(await self._run(self._each, where, lambda shard: shard.count(request)))

    async def scroll(self, where: Where, start: int, limit: int) -> tuple[list[tuple[int, dict[str, Any]]], int | None]:
        import qdrant_edge as edge

        request = edge.ScrollRequest(offset=start, limit=limit, filter=to_filter(where), with_payload=True, with_vector=False)
        pages = await self._run(self._each, where, lambda shard: shard.scroll(request))
        # Each shard's first `limit` points from `start`: the first `limit` of them all are among them.
        points = sorted((int(r.id), r.payload or {}) for records, _ in pages for r in records)
        if len(points) > limit:
            return points[:limit], points[limit][0]
        following = [int(after) for _, after in pages if after is not None]
        return points, min(following, default=None)

    async def retrieve(self, point: int, owners: tuple[int, ...] | None) -> dict[str, Any] | None:
        found = await self._run(self._each, Where({}, owners=owners), lambda shard: shard.retrieve([point], True, False))
        return next(((records[0].payload or {}) for records in found if records), None)

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
        found = await self._run(self._each, where, lambda shard: shard.query(request))
        # Several owners (a caller's collections and public ones): each shard's best, merged.
        hits = [(point.payload or {}, float(point.score)) for points in found for point in points]
        return sorted(hits, key=lambda hit: -hit[1])[:limit] if len(found) > 1 else hits

    # indexing

    def written(self) -> None:
        """Run the optimiser on the shards written to, in the background (one run at a time; a
        write during a run makes one more run of its shard after it)."""
        with self._optimiser_lock:
            if not self._unindexed or self._closing:
                return
            if self._optimiser is None:
                self._optimiser = threading.Thread(target=self._optimise, name="qdrant-edge-optimiser", daemon=True)
                self._optimiser.start()

    def _optimise(self) -> None:
        while True:
            with self._optimiser_lock:
                if not self._unindexed or self._closing:
                    self._optimiser = None
                    return
                owner = min(self._unindexed)
                self._unindexed.discard(owner)
            self._optimise_shard(owner)

    def _optimise_shard(self, owner: int) -> None:
        try:
            with self._shards.use(owner) as shard:
                if shard is not None:
                    shard.optimize()
        except Exception:  # noqa: BLE001  (indexing is an optimisation: searches still scan)
            log.exception("the vector store's optimiser failed on the shard of owner %s", owner)

    async def optimise_now(self) -> None:
        """Index every shard now and wait (benchmarks)."""
        optimiser = self._optimiser
        if optimiser is not None:
            await asyncio.to_thread(optimiser.join)
        for owner in self._shards.owners():
            await self._run(self._optimise_shard, owner)

    def open_shards(self) -> int:
        """How many owners' shards are open (tests)."""
        return self._shards.open_count()

    async def close(self) -> None:
        self._closing = True
        optimiser = self._optimiser
        if optimiser is not None:
            await asyncio.to_thread(optimiser.join)  # an optimisation in progress cannot be interrupted
        await self._run(self._shards.close_all)
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
