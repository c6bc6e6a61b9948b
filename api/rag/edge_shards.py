"""The owners' Qdrant Edge shards, one folder each (`<folder>/<owner>`), opened on first use
and kept open for the next call, at most `limit` at once.

One shard per owner keeps a tenant's searches and writes to its own segments: another
tenant's data, however large, is never opened, scanned nor indexed on their behalf. Each open
shard holds the memory maps of its files (66 files for a small shard, 353 for one of 100,000
chunks; measured here, one file descriptor stays open per shard), so the least recently used
shard is closed once more than `limit` are open. A shard in use (a search, a write, an optimiser
run) is never closed under its caller: the limit is then exceeded until the call ends.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from api.rag.engine import DENSE, SPARSE, PointData

if TYPE_CHECKING:
    import qdrant_edge as edge

log = logging.getLogger("tollgate.vectors")

# The optimiser holds Python's GIL while it runs (qdrant-edge-py 0.9): the whole process waits.
# Bounded segments keep each run short: the HNSW graph of one segment of ~30 MB of vectors
# (~20,000 × 384-d) is built in 1-2 s here, where one segment of 100,000 took 104 s; searches
# over the segments stay fast (docs/performance.md).
SEGMENT_KB = 30_000
SEGMENTS = 8


def shard_config(dimensions: int) -> edge.EdgeConfig:
    import qdrant_edge as edge

    return edge.EdgeConfig(
        vectors={DENSE: edge.EdgeVectorParams(size=dimensions, distance=edge.Distance.Cosine)},
        sparse_vectors={SPARSE: edge.EdgeSparseVectorParams(modifier=edge.Modifier.Idf)},
        optimizers=edge.EdgeOptimizersConfig(max_segment_size=SEGMENT_KB, default_segment_number=SEGMENTS),
    )


def create_shard(path: str, dimensions: int) -> edge.EdgeShard:
    """A new shard, its collection field indexed (with HNSW links of its own per collection)
    and its document field indexed for lookups only."""
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


class Shards:
    """Thread-safe: the engine's search threads and its optimiser thread share it."""

    def __init__(self, folder: str, limit: int) -> None:
        self.folder = folder
        self.dimensions: int | None = None  # the store's, set by the engine before any use
        self._limit = max(1, limit)
        self._open: OrderedDict[int, edge.EdgeShard] = OrderedDict()  # least recently used first
        self._users: Counter[int] = Counter()  # calls using each open shard right now
        self._lock = threading.Lock()

    def path(self, owner: int) -> str:
        return os.path.join(self.folder, str(owner))

    def owners(self) -> list[int]:
        """Every owner with a shard on disk."""
        names = os.listdir(self.folder) if os.path.isdir(self.folder) else []
        return sorted(int(name) for name in names if name.isdigit())

    def open_count(self) -> int:
        return len(self._open)

    @contextmanager
    def use(self, owner: int, create: bool = False) -> Iterator[edge.EdgeShard | None]:
        """The owner's shard, open for the duration; None when the owner has none (created
        first when `create`)."""
        shard = self._acquire(owner, create)
        try:
            yield shard
        finally:
            if shard is not None:
                self._release(owner)

    def _acquire(self, owner: int, create: bool) -> edge.EdgeShard | None:
        import qdrant_edge as edge

        with self._lock:  # opening maps files: ~0.1 s for a small shard, ~0.3 s for 100,000 chunks here
            shard = self._open.get(owner)
            if shard is None:
                path = self.path(owner)
                assert self.dimensions is not None
                if os.path.isdir(path):
                    # With the configuration of this version (its segment bounds).
                    shard = edge.EdgeShard.load(path, shard_config(self.dimensions))
                elif create:
                    shard = create_shard(path, self.dimensions)
                else:
                    return None
                self._open[owner] = shard
            self._open.move_to_end(owner)
            self._users[owner] += 1
            self._evict()
            return shard

    def _release(self, owner: int) -> None:
        with self._lock:
            self._users[owner] -= 1
            if self._users[owner] <= 0:
                del self._users[owner]
            self._evict()

    def _evict(self) -> None:
        """Close the least recently used shards nobody is using, down to the limit."""
        excess = len(self._open) - self._limit
        for owner in [owner for owner in self._open if owner not in self._users][:max(0, excess)]:
            self._close(self._open.pop(owner), owner)

    @staticmethod
    def _close(shard: Any, owner: int) -> None:
        try:
            shard.close()
        except Exception:  # noqa: BLE001  (its writes are already applied; a reopen reads them)
            log.exception("closing the vector shard of owner %s failed", owner)

    def drop(self, owner: int) -> None:
        """Delete the owner's shard from disk, unless a call is using it (it is then kept, for
        the next start-up's sweep: `EdgeEngine.upgrade`)."""
        with self._lock:
            if owner in self._users:
                log.warning("the vector shard of owner %s is in use: removed at a later start", owner)
                return
            shard = self._open.pop(owner, None)
            if shard is not None:
                self._close(shard, owner)
            shutil.rmtree(self.path(owner), ignore_errors=True)

    def close_all(self) -> None:
        with self._lock:
            while self._open:
                owner, shard = self._open.popitem()
                self._close(shard, owner)
