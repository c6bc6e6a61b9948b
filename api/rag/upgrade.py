"""Chunks written by an earlier Tollgate, moved into this version's layout at start-up (the
embedded engine's `upgrade`, before any other call): an upgrade keeps every document searchable.

Two earlier layouts, in turn:
1. qdrant-client's local mode (`collection/<name>`): copied into one Qdrant Edge shard (`edge`);
2. one Qdrant Edge shard for every owner (`edge`): split into a shard per owner
   (`shards/<owner>`), each point going to its collection's owner, as the database says.
   Points of a collection the database no longer has (deleted while the old version could not
   delete its vectors) are left behind.

Each copy is built in a folder of its own and renamed into place only once complete, so an
interrupted copy starts again at the next start. The old folders are then kept, renamed, as
backups that nothing reads (delete them once satisfied). The split reads and writes every
vector once and then builds each shard's HNSW graph, much as loading the chunks anew.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any

log = logging.getLogger("tollgate.vectors")

BACKUP_FOLDER = "collection-before-edge"
LEGACY_SHARD = "edge"  # one shard for every owner: the layout before per-owner shards
LEGACY_BACKUP = "edge-before-shards"
BATCH = 512
OPEN_WHILE_SPLITTING = 64  # owners' new shards open at once while points are copied


def local_mode_collection(root: str, collection: str) -> str | None:
    folder = os.path.join(root, "collection", collection)
    return folder if os.path.isdir(folder) else None


def migrate_local_mode(root: str, collection: str, shard_path: str) -> int:
    """Copy `collection` of the local-mode store at `root` into a new shard at `shard_path`;
    the number of points copied (0 when there was nothing to copy)."""
    if local_mode_collection(root, collection) is None:
        return 0
    from qdrant_client import QdrantClient

    from api.rag.edge_engine import write_dimensions
    from api.rag.edge_shards import create_shard, upsert_operation
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


def legacy_layout(root: str, collection: str, shards_path: str) -> bool:
    """Whether `root` holds chunks in an earlier layout only."""
    if os.path.isdir(shards_path):
        return False
    return os.path.isdir(os.path.join(root, LEGACY_SHARD)) or local_mode_collection(root, collection) is not None


def upgrade_needed(root: str, collection: str, shards_path: str) -> bool:
    """Whether chunks are to be moved; finishes a split interrupted after its copy was in place."""
    legacy = os.path.join(root, LEGACY_SHARD)
    if os.path.isdir(shards_path) and os.path.isdir(legacy):
        os.rename(legacy, os.path.join(root, LEGACY_BACKUP))
    return legacy_layout(root, collection, shards_path)


def split_by_owner(root: str, collection: str, shards_path: str, owners: dict[int, int]) -> int:
    """Move the chunks at `root` into one shard per owner under `shards_path`, `owners` giving
    each collection's owner; the number of points copied."""
    import qdrant_edge as edge

    from api.rag.edge_engine import read_dimensions
    from api.rag.edge_shards import Shards, shard_config, upsert_operation
    from api.rag.engine import DENSE, SPARSE, PointData, Sparse

    legacy = os.path.join(root, LEGACY_SHARD)
    if not os.path.isdir(legacy):
        migrate_local_mode(root, collection, legacy)
    dimensions = read_dimensions(root)
    if dimensions is None:
        raise RuntimeError(f"{root}: the vector size of {legacy} is not noted in edge.json")
    log.warning("moving the chunks of %s into one shard per owner at %s", legacy, shards_path)
    partial = f"{shards_path}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    targets = Shards(partial, OPEN_WHILE_SPLITTING)
    targets.dimensions = dimensions
    source = edge.EdgeShard.load(legacy, shard_config(dimensions))
    copied = left = 0
    offset: Any = None
    try:
        while True:
            records, offset = source.scroll(edge.ScrollRequest(offset=offset, limit=BATCH, with_payload=True, with_vector=True))
            by_owner: dict[int, list[PointData]] = {}
            for record in records:
                payload = record.payload or {}
                owner = owners.get(abs(int(payload.get("collection_id", 0))))  # negative: a document still ingesting
                if owner is None:
                    left += 1
                    continue
                named: Any = record.vector
                sparse = named.get(SPARSE)
                by_owner.setdefault(owner, []).append(PointData(
                    id=int(record.id), dense=list(named[DENSE]), payload=payload,
                    sparse=Sparse(list(sparse.indices), list(sparse.values)) if sparse is not None else Sparse([], []),
                ))
            for owner, batch in by_owner.items():
                with targets.use(owner, create=True) as shard:
                    assert shard is not None
                    shard.update(upsert_operation(batch))
                copied += len(batch)
            if offset is None:
                break
        for owner in targets.owners():
            with targets.use(owner) as shard:
                assert shard is not None
                shard.optimize()
                shard.flush()
    finally:
        source.close()
        targets.close_all()
    os.makedirs(partial, exist_ok=True)  # no owner at all: an empty store of the new layout
    moved_to = len(targets.owners())
    os.rename(partial, shards_path)
    os.rename(legacy, os.path.join(root, LEGACY_BACKUP))
    log.warning("moved %s chunks into %s owners' shards (%s of deleted collections left behind); the old shard is kept in %s",
                copied, moved_to, left, os.path.join(root, LEGACY_BACKUP))
    return copied
