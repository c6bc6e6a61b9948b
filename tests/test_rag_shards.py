"""Tenants apart in the embedded store: each user's chunks in a shard of their own. What another
user uploads, publishes or deletes changes nothing of a user's results (and, in the contract
tests, not even another tenant's shard destroyed on disk: tests/test_vector_engines.py)."""

from __future__ import annotations

from pathlib import Path

from conftest import ADMIN
from ragkit import Rag

MINE = {
    "cats.md": "# Cats\n\nCats are small domestic felines. A cat purrs, sleeps most of the day and hunts mice.",
    "bread.md": "# Bread\n\nBaking bread needs flour, water, yeast and salt; the dough rises before it goes in the oven.",
}
QUERY = "cats hunt mice, bread needs flour"


async def test_another_users_uploads_and_deletions_leave_your_results_alone(rag: Rag) -> None:
    alice, bob = await rag.user(), await rag.user(permissions=["create_public_collection"])
    mine = await rag.collection(alice)
    for name, text in MINE.items():
        await rag.ingest(alice, mine, name, text.encode())

    async def results(**scope: object) -> dict[str, list[tuple[int, str, float]]]:
        found = {}
        for method in ("semantic", "lexical", "hybrid"):
            response = await rag.search(alice, QUERY, method=method, **scope)
            assert response.status_code == 200, response.text
            found[method] = [(r["chunk"]["document_id"], r["chunk"]["content"], r["score"]) for r in response.json()["data"]]
        return found

    before = await results()
    assert all(len(hits) == 2 for hits in before.values())
    # Bob's many documents, full of the same words, one collection of them public.
    theirs = await rag.collection(bob, "theirs")
    public = await rag.collection(bob, "shared", visibility="public")
    for n in range(3):
        await rag.ingest(bob, theirs, f"memo{n}.md", ("cats mice bread flour " * 30 + f"memo {n}").encode())
    await rag.ingest(bob, public, "handbook.md", b"Our cats hunt mice in the bakery; bread needs flour.")
    assert await results(collection_ids=[mine]) == before
    # Searching everything Alice may read reaches Bob's public chunk too, her own chunks scored
    # as before by either method (each owner's lexical statistics are their own; a hybrid
    # score is relative to the other candidates, so it moves with them).
    everything = await results()
    for method, hits in everything.items():
        assert any(content.startswith("Our cats") for _, content, _ in hits), method
        if method != "hybrid":
            assert {h for h in hits if not h[1].startswith("Our cats")} == set(before[method]), method

    settings = rag.client.app.state.context.settings  # type: ignore[attr-defined]
    folder = Path(settings.dependencies.qdrant.path) / "shards"
    assert sorted(p.name for p in folder.iterdir()) == sorted([str(alice.id), str(bob.id)])
    for collection in (theirs, public):
        assert (await rag.client.delete(f"/v1/collections/{collection}", headers=bob.headers)).status_code == 204
    assert await results() == before


async def test_a_deleted_users_chunks_go_with_them_and_never_reach_whoever_comes_next(rag: Rag) -> None:
    """SQLite gives a deleted row's id to the next row made, when it was the last one: the next
    user, and their first collection, may carry the deleted user's ids."""
    from api.rag.engine import Where

    gone = await rag.user()
    collection = await rag.collection(gone)
    await rag.ingest(gone, collection, "secret.md", b"# Payroll\n\nThe director earns 240,000 a year, paid in twelve instalments.")
    vectors = rag.client.app.state.context.vectors  # type: ignore[attr-defined]
    assert await vectors.count(gone.id) == 1

    response = await rag.client.delete(f"/v1/admin/users/{gone.id}", headers=ADMIN)
    assert response.status_code == 204
    assert await vectors.count(gone.id) == 0  # erased with the user, not left on disk
    assert await vectors.engine.count(Where({}, owners=None)) == 0
    settings = rag.client.app.state.context.settings  # type: ignore[attr-defined]
    if settings.dependencies.qdrant.path is not None:
        assert not (Path(settings.dependencies.qdrant.path) / "shards" / str(gone.id)).exists()

    newcomer = await rag.user()
    theirs = await rag.collection(newcomer)
    for method in ("semantic", "lexical", "hybrid"):
        response = await rag.search(newcomer, "what does the director earn", method=method, collection_ids=[theirs])
        assert response.status_code == 200, response.text
        assert response.json()["data"] == [], (method, newcomer.id == gone.id, theirs == collection)


async def test_a_start_removes_the_shard_of_an_owner_with_no_collection(backend, tmp_path: Path) -> None:
    """What a user deleted by an earlier version left: gone shortly after the next start."""
    import asyncio
    import json
    import uuid

    from conftest import make_settings, running_app

    (tmp_path / "shards" / "999").mkdir(parents=True)
    (tmp_path / "edge.json").write_text(json.dumps({"dimensions": 256}))
    settings = make_settings(backend, f"tollgate-test:{uuid.uuid4().hex}:", qdrant_path=str(tmp_path),
                             rag={"vector_store_model": "embeddings"})
    async with running_app(settings):
        for _ in range(100):
            if not (tmp_path / "shards" / "999").exists():
                break
            await asyncio.sleep(0.05)
        assert not (tmp_path / "shards" / "999").exists()
