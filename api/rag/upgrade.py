"""Chunks written by an earlier Tollgate, whose embedded store was qdrant-client's local mode,
copied into Qdrant Edge on first open: an upgrade keeps every document searchable.

The copy is built in a folder of its own and renamed into place only once complete, so an
interrupted copy starts again at the next start. The old folder is then kept, renamed, as a
backup that nothing reads (delete it once satisfied).
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any

log = logging.getLogger("tollgate.vectors")

BACKUP_FOLDER = "collection-before-edge"
BATCH = 512


def local_mode_collection(root: str, collection: str) -> str | None:
    folder = os.path.join(root, "collection", collection)
    return folder if os.path.isdir(folder) else None


def migrate_local_mode(root: str, collection: str, shard_path: str) -> int:
    """Copy `collection` of the local-mode store at `root` into a new shard at `shard_path`;
    the number of points copied (0 when there was nothing to copy)."""
    if local_mode_collection(root, collection) is None:
        return 0
    from qdrant_client import QdrantClient

    from api.rag.edge_engine import create_shard, upsert_operation, write_dimensions
    from api.rag.engine import DENSE, SPARSE, PointData, Sparse

    log.warning("copying the chunks of %s (qdrant-client local mode) into Qdrant Edge at %s", root, shard_path)
    partial = f"{shard_path}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    client = QdrantClient(path=root)
    try:
        vectors = client.get_collection(collection).config.params.vectors
        dimensions = vectors[DENSE].size if isinstance(vectors, dict) else None
        if dimensions is None:
            raise RuntimeError(f"{root}: collection {collection!r} has no '{DENSE}' vectors: it was not written by Tollgate")
        shard = create_shard(partial, dimensions)
        copied = 0
        offset: Any = None
        while True:
            points, offset = client.scroll(collection, limit=BATCH, offset=offset, with_payload=True, with_vectors=True)
            batch = []
            for point in points:
                named: Any = point.vector
                sparse = named.get(SPARSE)
                batch.append(PointData(
                    id=int(point.id), dense=list(named[DENSE]), payload=point.payload or {},
                    sparse=Sparse(list(sparse.indices), list(sparse.values)) if sparse is not None else Sparse([], []),
                ))
            if batch:
                shard.update(upsert_operation(batch))
                copied += len(batch)
            if offset is None:
                break
        shard.optimize()
        shard.flush()
        shard.close()
    finally:
        client.close()
    write_dimensions(root, dimensions)
    os.rename(partial, shard_path)
    os.rename(os.path.join(root, "collection"), os.path.join(root, BACKUP_FOLDER))
    log.warning("copied %s chunks into Qdrant Edge; the old files are kept in %s", copied, os.path.join(root, BACKUP_FOLDER))
    return copied
