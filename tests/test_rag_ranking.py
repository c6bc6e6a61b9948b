"""Search rankings: tenants apart (what another user stores changes neither scores nor order),
hybrid fusion and its weights per request, the cap on chunks per document."""

from __future__ import annotations

from ragkit import Rag


async def test_another_tenants_documents_change_neither_scores_nor_order(rag: Rag) -> None:
    her, other = await rag.user(), await rag.user()
    collection = await rag.collection(her, "travel")
    for name, text in (("approval.md", "Budget approval: the hotel stay is approved."),
                       ("hotels.md", "A list of hotels near the station, with prices."),
                       ("trains.md", "Train tickets are booked by the travel desk; hotel vouchers too.")):
        await rag.ingest(her, collection, name, text.encode())

    async def rankings() -> dict[str, list[tuple[str, float]]]:
        found = {}
        for method in ("semantic", "lexical", "hybrid"):
            response = await rag.search(her, "budget hotel", method=method, limit=5)
            assert response.status_code == 200, response.text
            found[method] = [(r["chunk"]["content"], r["score"]) for r in response.json()["data"]]
        return found

    before = await rankings()
    assert before["lexical"][0][0].startswith("Budget approval") and len(before["semantic"]) == 3
    # Another user's private memos, full of "budget" (and "hotel"): 40 chunks.
    theirs = await rag.collection(other, "memos")
    memos = "\n\n".join(f"Memo {i}: the budget for the hotel budget line is cut." for i in range(40))
    await rag.ingest(other, theirs, "memos.md", memos.encode(), chunk_size="60")
    assert (await rankings()) == before


async def test_hybrid_weights_and_a_cap_on_chunks_per_document(rag: Rag) -> None:
    user = await rag.user()
    collection = await rag.collection(user)
    solar = "\n\n".join(f"Solar panel note {n}: the solar panels on the roof." for n in range(4))
    panels = await rag.ingest(user, collection, "solar.md", solar.encode(), chunk_size="60")
    roof = await rag.ingest(user, collection, "roof.md", b"Roof tiles and gutters are checked each spring.")

    async def documents(**args: object) -> list[int]:
        response = await rag.search(user, "solar panels roof", method="hybrid", limit=3, **args)
        assert response.status_code == 200, response.text
        return [r["chunk"]["document_id"] for r in response.json()["data"]]

    assert await documents() == [panels, panels, panels]
    capped = await documents(max_chunks_per_document=1)
    assert sorted(capped) == sorted([panels, roof])
    for fusion in ("rrf", "dbsf"):
        assert len(await documents(fusion=fusion, weights={"semantic": 0.5, "lexical": 0.5})) == 3
    for bad in ({"weights": {"semantic": 0, "lexical": 0}}, {"fusion": "max"}, {"max_chunks_per_document": 0}):
        assert (await rag.search(user, "solar", **bad)).status_code == 422, bad
