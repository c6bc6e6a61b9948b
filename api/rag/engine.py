"""What a vector engine does for the chunk store, whichever engine it is: Qdrant Edge in-process
(`edge_engine.py`, the embedded default) or a Qdrant server through qdrant-client
(`client_engine.py`). The store (`vectors.py`) decides what to ask; an engine only speaks its
library's dialect. Both pass the same contract tests (tests/test_vector_engines.py).

Each point carries its `collection_id` and `document_id` (both indexed), and belongs to an
owner: the user whose collection holds it. Every write names the owner, every read the owners
(and the collections) it may touch. Qdrant Edge keeps each owner in a shard of its own, so a
tenant's searches and writes never open another tenant's segments; a Qdrant server keeps one
collection and filters on the collections. Lexical statistics (IDF) are computed over the
searched collections of one owner: what another tenant stores changes neither a caller's scores
nor which points a query reads.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from api.rag.schemas import MetadataFilter

DENSE = "dense"
SPARSE = "lexical"
CHUNK_BITS = 24  # a point's id: document id × 2²⁴ + chunk id


def point_id(document_id: int, chunk_id: int) -> int:
    return (document_id << CHUNK_BITS) + chunk_id


@dataclass(frozen=True)
class Sparse:
    indices: list[int]
    values: list[float]


@dataclass(frozen=True)
class PointData:
    id: int
    dense: list[float]
    sparse: Sparse
    payload: dict[str, Any]


@dataclass(frozen=True)
class Where:
    """Points whose integer fields each match one of the values given, and the caller's own
    metadata filter (which narrows, never widens), among the points of `owners` (None: every
    owner's, for maintenance and tests; the application always names them)."""

    fields: dict[str, list[int]]
    metadata: MetadataFilter | None = None
    owners: tuple[int, ...] | None = None


Hit = tuple[dict[str, Any], float]  # a point's payload and its score
CollectionOwners = Callable[[], Awaitable[dict[int, int]]]  # each collection's owner (the database's)


class Engine(Protocol):
    async def ensure(self, dimensions: int) -> None:
        """Create the store for vectors of this size, or check the existing one holds them
        (InvalidRequestError when it does not)."""

    async def upgrade(self, owners: CollectionOwners) -> None:
        """Bring a store written by an earlier version to this version's layout (asked before
        any other call); `owners` is awaited only when there is something to move."""

    async def drop_owner(self, owner: int) -> None:
        """Let go of what the owner's points left once they are deleted (Qdrant Edge: their
        shard's folder)."""

    async def owners_kept(self) -> set[int]:
        """The owners the engine keeps something for apart (Qdrant Edge: a shard)."""

    async def exists(self) -> bool: ...

    async def upsert(self, owner: int, points: list[PointData]) -> None: ...

    async def set_payload(self, where: Where, payload: dict[str, Any]) -> None: ...

    async def delete(self, where: Where) -> None: ...

    async def count(self, where: Where) -> int: ...

    async def scroll(self, where: Where, start: int, limit: int) -> tuple[list[tuple[int, dict[str, Any]]], int | None]:
        """Points in id order from `start`: (id, payload) pairs and the next id, None at the end."""

    async def retrieve(self, point: int, owners: tuple[int, ...] | None) -> dict[str, Any] | None: ...

    async def nearest(
        self, using: str, vector: list[float] | Sparse, where: Where, limit: int, score_threshold: float | None,
        idf_corpus: Where | None,
    ) -> list[Hit]:
        """The `limit` best points by one vector; a sparse query's IDF is computed over
        `idf_corpus` only (whose owners are `where`'s: one, for a sparse query)."""

    def written(self) -> None:
        """A batch of writes is complete (a document made searchable): the engine may index."""

    async def close(self) -> None: ...
