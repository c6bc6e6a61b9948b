"""The vector store's contract, held by both engines: Qdrant Edge in-process (the embedded
default) and qdrant-client (here its local mode, standing in for a Qdrant server). An upgrade
from an earlier version's layouts keeps every chunk. Collection c belongs to owner OWNERS[c]."""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from api.errors import InvalidRequestError
from api.rag.client_engine import local_engine
from api.rag.edge_engine import EdgeEngine
from api.rag.schemas import ComparisonFilter, CompoundFilter, SearchMethod
from api.rag.vectors import NewChunk, Scope, SearchQuery, VectorStore

DIMENSIONS = 32
OWNERS = {1: 1, 2: 2, 3: 1, 4: 4, 5: 5, 6: 6}  # collection -> owner: 1 and 3 are one tenant's


async def owners() -> dict[int, int]:
    return dict(OWNERS)


def embed(text: str) -> list[float]:
    """Words hashed into the vector's dimensions, normalised: texts sharing words are close."""
    vector = [0.0] * DIMENSIONS
    for word in re.findall(r"\w+", text.lower()):
        digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
        vector[digest[0] % DIMENSIONS] += 1.0 if digest[1] % 2 else -1.0
    norm = sum(x * x for x in vector) ** 0.5 or 1.0
    return [x / norm for x in vector]


def build(kind: str, path: Path) -> VectorStore:
    """A store in `path`/vectors, a folder that does not exist yet."""
    folder = str(path / "vectors")
    engine = EdgeEngine(folder, "chunks") if kind == "edge" else local_engine(folder, "chunks")
    return VectorStore(None, "chunks", engine=engine, owners=owners)


@pytest.fixture(params=["edge", "qdrant-client"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[VectorStore]:
    vectors = build(request.param, tmp_path)
    yield vectors
    await vectors.close()


async def put(vectors: VectorStore, collection: int, document: int, texts: list[str], ready: bool = True,
              metadata: list[dict] | None = None) -> None:
    chunks = [NewChunk(i, text, (metadata or [{}] * len(texts))[i - 1]) for i, text in enumerate(texts, start=1)]
    await vectors.upsert(OWNERS[collection], collection, document, chunks, [embed(t) for t in texts], ready=ready, created=1)


async def find(vectors: VectorStore, collections: list[int], method: str, text: str, **extra: object) -> list[tuple[str, float]]:
    query = SearchQuery(method=SearchMethod(method), text=text, vector=embed(text), metadata_filter=extra.pop("where", None),
                        limit=int(extra.pop("limit", 10)), offset=0, **extra)  # type: ignore[arg-type]
    return [(chunk.content, round(score, 5)) for chunk, score in await vectors.search(Scope(collections, [], {c: OWNERS[c] for c in collections}), query)]


async def test_chunks_are_stored_listed_in_order_and_deleted(store: VectorStore) -> None:
    assert await store.count(document_id=1) == 0 and await store.chunks(1, 1, 0, 10) == []
    await put(store, 1, 1, [f"chunk number {i}" for i in range(1, 301)])
    await put(store, 1, 2, ["another document"])
    assert await store.count(collection_id=1) == 301 and await store.count(document_id=1) == 300
    page = await store.chunks(1, 1, 250, 20)
    assert [c.chunk_id for c in page] == list(range(251, 271)) and page[0].content == "chunk number 251"
    stored = await store.chunk(1, 1, 7)
    assert stored is not None and (stored.collection_id, stored.document_id, stored.content) == (1, 1, "chunk number 7")
    await store.delete(1, document_id=1, chunk_id=7)
    assert await store.chunk(1, 1, 7) is None and await store.count(document_id=1) == 299
    await store.delete(1, document_id=1)
    assert await store.count(collection_id=1) == 1
    await store.delete(1, collection_id=1)
    assert await store.count(collection_id=1) == 0


async def test_a_document_is_searchable_only_once_ready(store: VectorStore) -> None:
    await put(store, 1, 1, ["kerosene and liquid oxygen"], ready=False)
    for method in ("semantic", "lexical", "hybrid"):
        assert await find(store, [1], method, "kerosene oxygen") == []
    assert await store.count(collection_id=1) == 1  # a collection's count includes it
    await store.mark_ready(1, 1, 1)
    for method in ("semantic", "lexical", "hybrid"):
        assert [c for c, _ in await find(store, [1], method, "kerosene oxygen")] == ["kerosene and liquid oxygen"]


async def test_each_method_finds_its_best_chunk_and_filters_narrow(store: VectorStore) -> None:
    await put(store, 1, 1, ["cats purr and hunt mice", "rockets burn kerosene", "bread needs flour and yeast"],
              metadata=[{"team": "north-east", "a.b": 1}, {"team": "south-west", "a.b": 2.5}, {"team": "west", "a.b": 3}])
    for method in ("semantic", "lexical", "hybrid"):
        assert (await find(store, [1], method, "flour yeast"))[0][0] == "bread needs flour and yeast", method
    teams = {
        "sw": ComparisonFilter(key="team", type="sw", value="south"),
        "ew": ComparisonFilter(key="team", type="ew", value="west"),
        "co": ComparisonFilter(key="team", type="co", value="th-e"),
        "float": ComparisonFilter(key="a.b", type="eq", value=2.5),
        "or": CompoundFilter(type="or", filters=[ComparisonFilter(key="a.b", type="eq", value=1),
                                                 ComparisonFilter(key="team", type="eq", value="west")]),
    }
    found = {name: sorted(c for c, _ in await find(store, [1], "semantic", "anything", where=where)) for name, where in teams.items()}
    assert found == {
        "sw": ["rockets burn kerosene"], "ew": ["bread needs flour and yeast", "rockets burn kerosene"],
        "co": ["cats purr and hunt mice"], "float": ["rockets burn kerosene"],
        "or": ["bread needs flour and yeast", "cats purr and hunt mice"],
    }


async def test_another_tenants_chunks_change_no_score_nor_order(store: VectorStore) -> None:
    await put(store, 1, 1, ["Budget approval for the hotel", "Hotel booking guide", "Travel budget and hotel costs"])
    before = {method: await find(store, [1], method, "budget hotel") for method in ("semantic", "lexical", "hybrid")}
    # Another tenant's many chunks, full of the same words.
    memos = [f"budget memo {i}: the budget is the budget" for i in range(200)]
    await put(store, 2, 2, memos)
    after = {method: await find(store, [1], method, "budget hotel") for method in ("semantic", "lexical", "hybrid")}
    assert after == before and len(before["lexical"]) == 3
    # Searching their public collection too: each tenant's chunks are scored by that tenant's
    # statistics, so the first tenant's keep their scores; both are found.
    both = await find(store, [1, 2], "lexical", "budget hotel", limit=300)
    assert len(both) == 203 and {c: s for c, s in both if not c.startswith("budget memo")} == dict(before["lexical"])
    # The same tenant's other collection, searched with the first, does count its words.
    await put(store, 3, 3, memos)
    assert (await find(store, [1, 3], "lexical", "budget hotel"))[0][1] != before["lexical"][0][1]


async def test_fusion_weights_and_the_cap_per_document(store: VectorStore) -> None:
    await put(store, 1, 1, ["solar panels on the roof", "solar power storage", "solar inverter wiring"])
    await put(store, 1, 2, ["roof tiles and gutters"])
    capped = await find(store, [1], "hybrid", "solar roof", max_chunks_per_document=1)
    assert sorted(c for c, _ in capped) == ["roof tiles and gutters", "solar panels on the roof"]
    for fusion in ("rrf", "dbsf"):
        lexical_only = await find(store, [1], "hybrid", "solar roof", fusion=fusion, semantic_weight=0.0, lexical_weight=1.0)
        lexical = await find(store, [1], "lexical", "solar roof")
        assert [c for c, _ in lexical_only] == [c for c, _ in lexical], fusion


async def test_the_vector_size_is_fixed_by_the_first_chunks(store: VectorStore) -> None:
    await put(store, 1, 1, ["one"])
    with pytest.raises(InvalidRequestError, match="32-dimension"):
        await store.upsert(1, 1, 2, [NewChunk(1, "x", {})], [[0.1] * 8], ready=True, created=1)


async def test_an_upgrade_from_local_mode_keeps_every_chunk(tmp_path: Path) -> None:
    old = build("qdrant-client", tmp_path)
    await put(old, 1, 1, ["cats purr and hunt mice", "rockets burn kerosene"], metadata=[{"team": "a"}, {"team": "b"}])
    before = {method: await find(old, [1], method, "kerosene rockets") for method in ("semantic", "lexical", "hybrid")}
    await old.close()

    upgraded = build("edge", tmp_path)
    try:
        after = {method: await find(upgraded, [1], method, "kerosene rockets") for method in ("semantic", "lexical", "hybrid")}
        assert [c for c, _ in after["semantic"]] == [c for c, _ in before["semantic"]] and after["lexical"] == before["lexical"]
        assert (await upgraded.chunk(1, 1, 2)).metadata == {"team": "b"}  # type: ignore[union-attr]
        await put(upgraded, 1, 2, ["a new chunk"])
        assert await upgraded.count(collection_id=1) == 3
    finally:
        await upgraded.close()
    assert (tmp_path / "vectors" / "collection-before-edge").is_dir() and not (tmp_path / "vectors" / "collection").exists()
    assert (tmp_path / "vectors" / "edge-before-shards").is_dir() and (tmp_path / "vectors" / "shards" / "1").is_dir()


async def test_a_search_across_tenants_merges_their_best(store: VectorStore) -> None:
    await put(store, 1, 1, ["rockets burn kerosene", "cats purr"])
    await put(store, 2, 2, ["rockets need liquid oxygen", "bread needs flour"])
    for method in ("semantic", "lexical", "hybrid"):
        found = [c for c, _ in await find(store, [1, 2], method, "rockets kerosene oxygen", limit=2)]
        assert sorted(found) == ["rockets burn kerosene", "rockets need liquid oxygen"], method
    assert [c.content for c in await store.chunks(2, 2, 0, 10)] == ["rockets need liquid oxygen", "bread needs flour"]
    assert await store.count(collection_id=2) == 2 and await store.count(2, collection_id=2) == 2


# Qdrant Edge: a shard per owner.


async def test_a_tenants_search_never_opens_another_tenants_shard(tmp_path: Path) -> None:
    store = build("edge", tmp_path)
    await put(store, 1, 1, ["Budget approval for the hotel", "Hotel booking guide", "Travel budget and hotel costs"])
    await put(store, 2, 2, [f"budget memo {i}: the budget is the budget" for i in range(50)])
    before = {method: await find(store, [1], method, "budget hotel") for method in ("semantic", "lexical", "hybrid")}
    await store.close()
    # The other tenant's shard, damaged beyond use: every file of it overwritten.
    for file in (tmp_path / "vectors" / "shards" / "2").rglob("*"):
        if file.is_file():
            file.write_bytes(b"\0garbage" * 64)

    store = build("edge", tmp_path)
    try:
        after = {method: await find(store, [1], method, "budget hotel") for method in ("semantic", "lexical", "hybrid")}
        assert after == before and len(after["lexical"]) == 3
        assert store.engine.open_shards() == 1  # type: ignore[attr-defined]
        with pytest.raises(Exception):  # noqa: B017  (the damage is real: its own owner cannot read it)
            await find(store, [2], "lexical", "budget")
    finally:
        await store.close()


async def test_open_shards_are_bounded_and_reopened_on_demand(tmp_path: Path) -> None:
    store = VectorStore(None, "chunks", engine=EdgeEngine(str(tmp_path / "vectors"), "chunks", open_shards=2), owners=owners)
    try:
        for collection in (1, 2, 4, 5, 6):
            await put(store, collection, collection, [f"tenant {collection} writes about topic{collection}"])
        assert store.engine.open_shards() == 2  # type: ignore[attr-defined]
        for collection in (1, 2, 4, 5, 6):
            found = await find(store, [collection], "hybrid", f"topic{collection}")
            assert [c for c, _ in found] == [f"tenant {collection} writes about topic{collection}"]
        assert store.engine.open_shards() == 2  # type: ignore[attr-defined]
        assert sorted(p.name for p in (tmp_path / "vectors" / "shards").iterdir()) == ["1", "2", "4", "5", "6"]
    finally:
        await store.close()


async def test_an_upgrade_from_one_shard_for_everyone_gives_each_owner_theirs(tmp_path: Path) -> None:
    from api.rag.edge_engine import write_dimensions
    from api.rag.edge_shards import create_shard, upsert_operation
    from api.rag.engine import PointData, Sparse, point_id
    from api.rag.lexical import LexicalAnalyzer

    # The previous layout: one shard at vectors/edge for every owner; one chunk still ingesting
    # (its collection negated), one of a collection deleted since.
    root = tmp_path / "vectors"
    write_dimensions(str(root), DIMENSIONS)
    old = create_shard(str(root / "edge"), DIMENSIONS)
    lexical = LexicalAnalyzer("english")
    rows = [(1, 1, 1, "rockets burn kerosene"), (1, 1, 2, "cats purr"), (2, 2, 1, "rockets need liquid oxygen"),
            (-2, 3, 1, "half ingested"), (9, 4, 1, "of a deleted collection")]
    old.update(upsert_operation([
        PointData(point_id(document, chunk), embed(text), Sparse(*lexical.document_weights(text)),
                  {"collection_id": collection, "document_id": document, "chunk_id": chunk, "content": text, "metadata": {}})
        for collection, document, chunk, text in rows
    ]))
    old.close()

    store = build("edge", tmp_path)
    try:
        assert [c for c, _ in await find(store, [1], "lexical", "rockets")] == ["rockets burn kerosene"]
        assert [c for c, _ in await find(store, [1, 2], "semantic", "liquid oxygen rockets", limit=1)] == ["rockets need liquid oxygen"]
        assert await store.count(1) == 2 and await store.count(2) == 2 and await store.count() == 4
        await store.mark_ready(2, 2, 3)
        assert [c for c, _ in await find(store, [2], "lexical", "ingested")] == ["half ingested"]
    finally:
        await store.close()
    assert sorted(p.name for p in (root / "shards").iterdir()) == ["1", "2"]
    assert (root / "edge-before-shards").is_dir() and not (root / "edge").exists()


async def test_a_split_interrupted_after_its_copy_was_in_place_is_finished(tmp_path: Path) -> None:
    from api.rag.upgrade import upgrade_needed

    root = tmp_path / "vectors"
    (root / "shards" / "1").mkdir(parents=True)
    (root / "edge").mkdir()  # renamed last: still there when the process stopped just before
    assert not upgrade_needed(str(root), "chunks", str(root / "shards"))
    assert (root / "edge-before-shards").is_dir() and not (root / "edge").exists()


async def test_a_shard_whose_owner_has_no_collection_left_is_removed_by_the_sweep(tmp_path: Path) -> None:
    """A user deleted by an earlier version left their shard: SQLite may give their id to the
    next user made, who must not find it."""
    store = build("edge", tmp_path)
    await put(store, 1, 1, ["the director earns 240,000 a year"])
    await put(store, 2, 2, ["owner two's memo"])
    await store.close()

    async def owner_one_gone() -> dict[int, int]:
        return {c: o for c, o in OWNERS.items() if o != 1}

    store = VectorStore(None, "chunks", engine=EdgeEngine(str(tmp_path / "vectors"), "chunks"), owners=owner_one_gone)
    try:
        await store.sweep()  # what each start runs (`api.runtime.open_rag`)
        assert await store.count(1) == 0 and await store.count(2) == 1
        assert sorted(p.name for p in (tmp_path / "vectors" / "shards").iterdir()) == ["2"]
    finally:
        await store.close()
