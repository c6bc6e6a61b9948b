"""Collections, documents and chunks, ingestion, search; tenancy; bad files."""

from __future__ import annotations

import asyncio
import json

import pytest
from conftest import ADMIN, Models, SeededUser, Seeder, usage_rows
from pdfs import make_pdf
from ragkit import SIX_PAGES, Rag, document_waiting, six_pages_waiting

CORPUS = {
    "cats.md": "# Cats\n\nCats are small domestic felines. A cat purrs, sleeps most of the day and hunts mice.",
    "rockets.md": "# Rockets\n\nA rocket engine burns propellant; liquid oxygen and kerosene launch satellites into orbit.",
    "bread.md": "# Bread\n\nBaking bread needs flour, water, yeast and salt; the dough rises before it goes in the oven.",
}


async def test_a_multi_page_pdf_becomes_chunks_that_carry_their_page(rag: Rag) -> None:
    user = await rag.user()
    collection = await rag.collection(user)
    pdf = make_pdf(["The first page talks about apples.", "The second page talks about pears.", "Third: plums."])
    document = await rag.ingest(user, collection, "fruit.pdf", pdf, metadata=json.dumps({"source": "orchard"}))
    info = (await rag.client.get(f"/v1/documents/{document}", headers=user.headers)).json()
    assert info["chunks"] == 3 and info["pages"] == 3 and info["progress"] == 1.0 and info["collection_id"] == collection
    chunks = (await rag.client.get(f"/v1/documents/{document}/chunks", params={"limit": 10}, headers=user.headers)).json()
    assert [(c["content"], c["metadata"]["page"]) for c in chunks["data"]] == [
        ("The first page talks about apples.", 1), ("The second page talks about pears.", 2), ("Third: plums.", 3)
    ]
    assert all(c["metadata"]["source"] == "orchard" and c["document_id"] == document for c in chunks["data"])
    second = (await rag.client.get(f"/v1/documents/{document}/chunks/{chunks['data'][1]['id']}", headers=user.headers)).json()
    assert second["content"] == "The second page talks about pears."
    # The embedding calls were charged to the uploading user, like any call.
    rows = [r for r in await usage_rows(rag.client) if r.endpoint == "/v1/embeddings"]
    assert rows and all(r.user_id == user.id and r.status == 200 and r.cost_nanos > 0 for r in rows)


async def test_semantic_lexical_and_hybrid_search_find_the_expected_chunk(rag: Rag) -> None:
    user = await rag.user()
    collection = await rag.collection(user)
    for filename, text in CORPUS.items():
        await rag.ingest(user, collection, filename, text.encode())
    for method, query, expected in (
        ("semantic", "which animal purrs and hunts mice?", "Cats"),
        ("lexical", "kerosene oxygen", "Rockets"),
        ("hybrid", "flour yeast dough", "Bread"),
    ):
        response = await rag.search(user, query, method=method, collection_ids=[collection], limit=3)
        assert response.status_code == 200, response.text
        results = response.json()["data"]
        assert results[0]["chunk"]["content"].startswith(f"# {expected}"), (method, results)
        assert results[0]["method"] == method and results[0]["chunk"]["collection_id"] == collection
    usage = (await rag.search(user, "cats", method="hybrid")).json()["usage"]
    assert usage["prompt_tokens"] == 1 and usage["cost"] > 0  # the query's embedding


async def test_lexical_search_matches_word_forms_and_ignores_function_words(rag: Rag) -> None:
    user = await rag.user()
    collection = await rag.collection(user)
    for name, text in (("gateway.md", "Tollgate is a gateway."), ("soup.md", "The cafeteria serves lentil soup on Tuesdays."),
                       ("revenue.md", "Quarterly revenue grew by ten percent.")):
        await rag.ingest(user, collection, name, text.encode())
    # "what", "is" match nothing; "served" finds "serves", "Tuesday" finds "Tuesdays".
    for query in ("what soup is served", "What is served on Tuesday?"):
        results = (await rag.search(user, query, method="lexical", collection_ids=[collection], limit=3)).json()["data"]
        assert [r["chunk"]["content"] for r in results] == ["The cafeteria serves lentil soup on Tuesdays."], (query, results)
    # A query of function words only finds nothing, and is no error.
    response = await rag.search(user, "what is it", method="lexical", collection_ids=[collection])
    assert response.status_code == 200 and response.json()["data"] == []


async def test_lexical_language_is_a_setting(app_factory) -> None:
    from api.rag.lexical import LexicalAnalyzer

    assert LexicalAnalyzer("french").terms("Les maisons de la ville") == ["maison", "vill"]
    assert LexicalAnalyzer("none").terms("The Serves") == ["the", "serves"]
    with pytest.raises(Exception, match="unknown language 'klingon'"):
        await app_factory(rag={"lexical_language": "klingon"})


async def test_metadata_filters(rag: Rag) -> None:
    user = await rag.user()
    collection = await rag.collection(user)
    document = (await rag.client.post("/v1/documents", data={"collection_id": str(collection), "name": "notes"},
                                      headers=user.headers)).json()["id"]
    chunks = [
        {"content": "report on cats for the north team", "metadata": {"team": "north-east", "year": 2024}},
        {"content": "report on cats for the south team", "metadata": {"team": "south-west", "year": 2025}},
        {"content": "report on cats for the west team", "metadata": {"team": "west", "year": 2025}},
    ]
    response = await rag.client.post(f"/v1/documents/{document}/chunks", json={"chunks": chunks}, headers=user.headers)
    assert response.status_code == 201, response.text

    async def teams(metadata_filters: dict) -> set[str]:
        response = await rag.search(user, "report on cats", method="semantic", metadata_filters=metadata_filters)
        assert response.status_code == 200, response.text
        return {r["chunk"]["metadata"]["team"] for r in response.json()["data"]}

    assert await teams({"key": "year", "type": "eq", "value": 2025}) == {"south-west", "west"}
    assert await teams({"key": "team", "type": "sw", "value": "south"}) == {"south-west"}
    assert await teams({"key": "team", "type": "ew", "value": "west"}) == {"south-west", "west"}
    assert await teams({"key": "team", "type": "co", "value": "th-e"}) == {"north-east"}
    assert await teams({"type": "or", "filters": [{"key": "team", "type": "eq", "value": "west"},
                                                  {"key": "year", "type": "eq", "value": 2024}]}) == {"west", "north-east"}
    assert await teams({"type": "and", "filters": [{"key": "team", "type": "ew", "value": "west"},
                                                   {"key": "team", "type": "sw", "value": "w"}]}) == {"west"}
    bad = await rag.search(user, "x", metadata_filters={"key": "team", "type": "sw", "value": 3})
    assert bad.status_code == 422


async def test_a_user_never_reaches_another_users_private_chunks(rag: Rag) -> None:
    owner, other = await rag.user(), await rag.user()
    private = await rag.collection(owner, "secret")
    document = await rag.ingest(owner, private, "secret.md", b"The launch code is swordfish.")

    # Listing, reading, searching and chatting: nothing of the private collection.
    listing = (await rag.client.get("/v1/collections", headers=other.headers)).json()
    assert private not in [c["id"] for c in listing["data"]]
    for path in (f"/v1/collections/{private}", f"/v1/documents/{document}", f"/v1/documents/{document}/chunks",
                 f"/v1/documents/{document}/chunks/1"):
        assert (await rag.client.get(path, headers=other.headers)).status_code == 404, path
    assert (await rag.client.get("/v1/documents", headers=other.headers)).json()["data"] == []
    assert (await rag.search(other, "launch code swordfish", collection_ids=[private])).status_code == 404
    assert (await rag.search(other, "launch code swordfish", document_ids=[document])).status_code == 404
    for method in ("semantic", "lexical", "hybrid"):
        everything = await rag.search(other, "launch code swordfish", method=method)
        assert everything.status_code == 200 and everything.json()["data"] == [], method
    # A filter cannot widen the search to other tenants' points.
    sneaky = await rag.search(other, "swordfish", method="lexical", metadata_filters={
        "type": "or", "filters": [{"key": "collection_id", "type": "eq", "value": private}, {"key": "x", "type": "co", "value": "a"}]})
    assert sneaky.status_code == 200 and sneaky.json()["data"] == []
    # Writing is the owner's only.
    assert (await rag.client.delete(f"/v1/documents/{document}", headers=other.headers)).status_code == 404
    # The owner finds it.
    found = (await rag.search(owner, "launch code swordfish", method="hybrid")).json()["data"]
    assert found and found[0]["chunk"]["document_id"] == document


async def test_public_collections_need_the_permission_and_are_readable_by_all(rag: Rag) -> None:
    plain, publisher, reader = await rag.user(), await rag.user(permissions=["create_public_collection"]), await rag.user()
    refused = await rag.client.post("/v1/collections", json={"name": "p", "visibility": "public"}, headers=plain.headers)
    assert refused.status_code == 403
    public = await rag.collection(publisher, "handbook", visibility="public")
    document = await rag.ingest(publisher, public, "handbook.md", b"Holidays are requested two weeks ahead.")
    found = (await rag.search(reader, "holidays requested", method="lexical")).json()["data"]
    assert [r["chunk"]["document_id"] for r in found] == [document]
    assert (await rag.client.patch(f"/v1/collections/{public}", json={"name": "x"}, headers=reader.headers)).status_code == 403
    private_again = await rag.client.patch(f"/v1/collections/{public}", json={"visibility": "private"}, headers=publisher.headers)
    assert private_again.status_code == 204
    assert (await rag.search(reader, "holidays requested", method="lexical")).json()["data"] == []


async def test_deleting_leaves_no_vectors(rag: Rag) -> None:
    user = await rag.user()
    collection = await rag.collection(user)
    first = await rag.ingest(user, collection, "cats.md", CORPUS["cats.md"].encode())
    second = await rag.ingest(user, collection, "bread.md", CORPUS["bread.md"].encode())
    vectors = rag.client.app.state.context.vectors  # type: ignore[attr-defined]
    assert await vectors.count(document_id=first) == 1 and await vectors.count(collection_id=collection) == 2
    assert (await rag.client.delete(f"/v1/documents/{first}", headers=user.headers)).status_code == 204
    assert await vectors.count(document_id=first) == 0 and await vectors.count(collection_id=collection) == 1
    assert (await rag.client.get(f"/v1/documents/{first}", headers=user.headers)).status_code == 404
    assert (await rag.client.delete(f"/v1/collections/{collection}", headers=user.headers)).status_code == 204
    assert await vectors.count(collection_id=collection) == 0 and await vectors.count(document_id=second) == 0
    assert (await rag.client.get(f"/v1/documents/{second}", headers=user.headers)).status_code == 404


async def test_chunks_added_by_hand_and_deleted(rag: Rag) -> None:
    user = await rag.user()
    collection = await rag.collection(user)
    document = (await rag.client.post("/v1/documents", data={"collection_id": str(collection), "name": "manual"},
                                      headers=user.headers)).json()["id"]
    created = await rag.client.post(f"/v1/documents/{document}/chunks", headers=user.headers,
                                    json={"chunks": [{"content": "alpha"}, {"content": "beta"}, {"content": "gamma"}]})
    assert created.status_code == 201 and created.json()["ids"] == [1, 2, 3]
    assert (await rag.client.delete(f"/v1/documents/{document}/chunks/2", headers=user.headers)).status_code == 204
    listing = (await rag.client.get(f"/v1/documents/{document}/chunks", headers=user.headers)).json()
    assert [c["content"] for c in listing["data"]] == ["alpha", "gamma"] and listing["total"] == 2
    more = await rag.client.post(f"/v1/documents/{document}/chunks", json={"chunks": [{"content": "delta"}]}, headers=user.headers)
    assert more.json()["ids"] == [4]  # ids are never reused
    too_many = await rag.client.post(f"/v1/documents/{document}/chunks", headers=user.headers,
                                     json={"chunks": [{"content": "x"}] * 65})
    assert too_many.status_code == 422


@pytest.mark.parametrize(
    ("filename", "content", "status", "detail"),
    [
        ("broken.pdf", b"%PDF-1.4 this is not really a pdf", 400, "not a readable PDF"),
        ("empty.txt", b"", 400, "empty"),
        ("image.png", b"\x89PNG\r\n\x1a\n....", 415, "Unsupported file type"),
        ("latin1.txt", "café".encode("latin-1"), 400, "not UTF-8"),
        ("data.json", b"{not json", 400, "not valid JSON"),
    ],
)
async def test_bad_files_are_refused_and_leave_nothing(rag: Rag, filename: str, content: bytes, status: int, detail: str) -> None:
    user = await rag.user()
    collection = await rag.collection(user)
    response = await rag.upload(user, collection, filename, content)
    assert response.status_code == status and detail in response.json()["detail"], response.text
    assert (await rag.client.get("/v1/documents", headers=user.headers)).json()["total"] == 0


async def test_an_upload_over_the_limit_is_refused_before_it_is_read(app_factory, embedding_upstream) -> None:
    client = await app_factory(rag={"vector_store_model": "embeddings", "max_upload_bytes": 1_000_000})
    models = Models(client, Seeder(client))
    router = await models.router("embeddings", type="text-embeddings-inference")
    await models.provider(router, embedding_upstream.base_url, model_name="fake-embed")
    user = await models.user_for(router)
    collection = (await client.post("/v1/collections", json={"name": "c"}, headers=user.headers)).json()["id"]
    huge = b"a" * (100 * 1024 * 1024)
    response = await client.post("/v1/documents", headers=user.headers, files={"file": ("big.txt", huge)},
                                 data={"collection_id": str(collection)})
    assert response.status_code == 413
    assert (await client.get("/v1/documents", headers=user.headers)).json()["total"] == 0


async def test_a_file_name_cannot_traverse_paths(rag: Rag) -> None:
    user = await rag.user()
    collection = await rag.collection(user)
    document = await rag.ingest(user, collection, "../../etc/passwd.txt", b"root:x:0:0")
    assert (await rag.client.get(f"/v1/documents/{document}", headers=user.headers)).json()["name"] == "passwd.txt"


async def test_documents_and_search_without_a_vector_store_model_say_so(client, seed: Seeder) -> None:
    user = await seed.user()
    collection = (await client.post("/v1/collections", json={"name": "c"}, headers=user.headers)).json()["id"]
    response = await client.post("/v1/documents", headers=user.headers, files={"file": ("a.txt", b"hello")},
                                 data={"collection_id": str(collection)})
    assert response.status_code == 400 and "vector_store_model" in response.json()["detail"]
    response = await client.post("/v1/search", json={"query": "hello"}, headers=user.headers)
    assert response.status_code == 400 and "vector_store_model" in response.json()["detail"]


async def test_master_key_owns_no_collections(rag: Rag) -> None:
    response = await rag.client.post("/v1/collections", json={"name": "x"}, headers=ADMIN)
    assert response.status_code == 403


async def test_a_worker_dying_mid_ingestion_loses_nothing_and_duplicates_nothing(app_factory, embedding_upstream) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from api.db.tables import Document

    # One embeddings call at a time: the document's progress moves a sixth per call, so the
    # test sees it past 30% with most calls still to come (with several at once it went from
    # a third to done between two reads of a busy machine, and the worker was not mid-document).
    rag, user, document = await six_pages_waiting(app_factory, embedding_upstream, embedding_concurrency=1)
    client, pages = rag.client, SIX_PAGES
    context = client.app.state.context  # type: ignore[attr-defined]

    # Slow enough that the worker is still mid-document when the test sees 30% done, even on a
    # loaded machine (each progress read may take a while then).
    embedding_upstream.behaviour.delay_seconds = 0.25
    worker = asyncio.ensure_future(context.ingestion.run_once())
    while (await client.get(f"/v1/documents/{document}", headers=user.headers)).json()["progress"] < 0.3:
        await asyncio.sleep(0.01)
    worker.cancel()  # the worker dies: no clean-up of any kind runs
    with pytest.raises(asyncio.CancelledError):
        await worker
    embedding_upstream.behaviour.delay_seconds = 0

    half = (await client.get(f"/v1/documents/{document}", headers=user.headers)).json()
    assert half["status"] == "processing" and 0 < half["progress"] < 1
    assert await context.vectors.count(document_id=document) >= 2  # what it wrote before dying...
    assert (await rag.search(user, "topic number", method="lexical")).json()["data"] == []  # ...is not searchable
    assert not await context.ingestion.run_once()  # its claim still holds: nobody takes the document over yet

    async with context.session_factory() as session:  # the claim expires
        await session.execute(update(Document).where(Document.id == document)
                              .values(claimed_until=datetime.now(UTC) - timedelta(seconds=1)))
        await session.commit()
    assert await context.ingestion.run_once()
    done = (await client.get(f"/v1/documents/{document}", headers=user.headers)).json()
    assert done["status"] == "ready" and done["chunks"] == 6
    assert await context.vectors.count(document_id=document) == 6
    listing = (await client.get(f"/v1/documents/{document}/chunks", params={"limit": 100}, headers=user.headers)).json()
    assert sorted(c["content"] for c in listing["data"]) == sorted(pages)
    assert len((await rag.search(user, "topic number", method="lexical", limit=100)).json()["data"]) == 6


async def test_a_provider_failing_during_ingestion_is_retried_then_reported(app_factory, embedding_upstream) -> None:
    from sqlalchemy import update

    from api.db.tables import Document

    rag, user, document = await document_waiting(app_factory, embedding_upstream, "a.md", b"some text", max_ingestion_attempts=2)
    client = rag.client
    context = client.app.state.context  # type: ignore[attr-defined]
    embedding_upstream.behaviour.fail_status = 503

    async def attempt() -> dict:
        async with context.session_factory() as session:  # skip the back-off wait
            await session.execute(update(Document).where(Document.id == document).values(claimed_until=None))
            await session.commit()
        assert await context.ingestion.run_once()
        return (await client.get(f"/v1/documents/{document}", headers=user.headers)).json()

    first = await attempt()
    assert first["status"] == "processing" and "503" in first["error"]  # will be retried
    await attempt()
    gave_up = await attempt()
    assert gave_up["status"] == "failed" and "Gave up after 2 attempts" in gave_up["error"]
    assert await context.vectors.count(document_id=document) == 0


async def _chat_setup(rag: Rag) -> tuple[SeededUser, int, int]:
    chat_router = await rag.models.router("chat")
    await rag.models.provider(chat_router, rag.upstream.base_url)
    user = await rag.models.user_for(rag.router, chat_router)
    collection = await rag.collection(user)
    document = await rag.ingest(user, collection, "cats.md", CORPUS["cats.md"].encode())
    await rag.ingest(user, collection, "rockets.md", CORPUS["rockets.md"].encode())
    return user, collection, document


async def test_chat_with_search_puts_the_chunk_in_the_prompt_and_returns_it(rag: Rag) -> None:
    user, collection, document = await _chat_setup(rag)
    question = "What does a cat hunt?"
    for extra in (
        {"tools": [{"type": "search", "collection_ids": [collection], "method": "hybrid", "limit": 1}]},
        {"search": True, "search_args": {"collection_ids": [collection], "method": "semantic", "limit": 1}},
    ):
        response = await rag.client.post("/v1/chat/completions", headers=user.headers,
                                         json={"model": "chat", "messages": [{"role": "user", "content": question}], **extra})
        assert response.status_code == 200, response.text
        results = response.json()["search_results"]
        assert [r["chunk"]["document_id"] for r in results] == [document]
        sent = rag.upstream.received[-1].body
        prompt = sent["messages"][-1]["content"]
        assert "hunts mice" in prompt and question in prompt
        assert "tools" not in sent and "search" not in sent and "search_args" not in sent


async def test_chat_with_search_streams_the_results_with_the_last_chunk(rag: Rag) -> None:
    user, collection, document = await _chat_setup(rag)
    body = {"model": "chat", "stream": True, "messages": [{"role": "user", "content": "kerosene rocket engine"}],
            "tools": [{"type": "search", "method": "lexical", "limit": 1}]}
    response = await rag.client.post("/v1/chat/completions", json=body, headers=user.headers)
    assert response.status_code == 200
    events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")]
    final = events[-1]
    assert final["usage"]["total_tokens"] > 0 and final["search_results"][0]["chunk"]["content"].startswith("# Rockets")
    assert "liquid oxygen" in rag.upstream.received[-1].body["messages"][-1]["content"]


async def test_chat_with_search_never_reaches_another_users_chunks(rag: Rag) -> None:
    owner, collection, _ = await _chat_setup(rag)
    other = await rag.models.user_for(rag.router, *await _router_ids(rag))
    body = {"model": "chat", "messages": [{"role": "user", "content": "What does a cat hunt?"}],
            "tools": [{"type": "search", "method": "hybrid"}]}
    response = await rag.client.post("/v1/chat/completions", json=body, headers=other.headers)
    assert response.status_code == 200 and response.json()["search_results"] == []
    assert "hunts mice" not in rag.upstream.received[-1].body["messages"][-1]["content"]
    named = await rag.client.post("/v1/chat/completions", headers=other.headers,
                                  json={**body, "tools": [{"type": "search", "collection_ids": [collection]}]})
    assert named.status_code == 404
    rows = await usage_rows(rag.client)
    assert rows[-1].endpoint == "/v1/chat/completions" and rows[-1].status == 404  # the refused call is recorded too


async def _router_ids(rag: Rag) -> list[int]:
    routers = (await rag.client.get("/v1/admin/routers", headers=ADMIN)).json()["data"]
    return [r["id"] for r in routers if r["name"] == "chat"]


async def test_search_results_reranked_by_a_text_classification_model(rag: Rag) -> None:
    rerank_router = await rag.models.router("rerank", type="text-classification")
    await rag.models.provider(rerank_router, rag.upstream.base_url, model_name="fake-chat")
    user = await rag.models.user_for(rag.router, rerank_router)
    collection = await rag.collection(user)
    for filename, text in CORPUS.items():
        await rag.ingest(user, collection, filename, text.encode())
    response = await rag.search(user, "bread dough oven", method="semantic", limit=2, rerank_model="rerank")
    assert response.status_code == 200, response.text
    results = response.json()["data"]
    sent = [r.body for r in rag.upstream.received if r.path == "/v1/rerank"][-1]
    assert sent["query"] == "bread dough oven" and len(sent["documents"]) == 3  # candidates beyond the limit
    assert len(results) == 2 and results[0]["chunk"]["content"].startswith("# Bread")
    # The reranker's own scores: "bread" and "dough" found, "oven." is not the word "oven" to the fake.
    assert results[0]["score"] == pytest.approx(2 / 3) and results[0]["score"] >= results[1]["score"]
    rows = [r.endpoint for r in await usage_rows(rag.client) if r.user_id == user.id]
    assert rows[-2:] == ["/v1/embeddings", "/v1/rerank"]


async def test_an_embeddings_answer_short_of_vectors_is_recorded_as_the_502_it_becomes_and_charged(rag: Rag) -> None:
    user = await rag.user()
    collection = await rag.collection(user)
    rag.upstream.behaviour.vectors_missing = 1
    response = await rag.search(user, "which animal purrs", method="semantic", collection_ids=[collection])
    assert response.status_code == 502 and response.json() == {"detail": "Model 'embeddings' returned 0 vectors for 1 texts"}
    row = (await usage_rows(rag.client))[-1]
    assert (row.endpoint, row.status, row.user_id) == ("/v1/embeddings", 502, user.id)  # was recorded 200
    # The provider did the work it reported: 3 prompt tokens at 2 micro-units per million.
    assert (row.prompt_tokens, row.cost_nanos) == (3, 3 * 2_000)
