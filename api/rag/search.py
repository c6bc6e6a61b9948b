"""Search over the collections a caller may read: semantic, lexical or hybrid, optionally
re-ranked. Tenancy is decided here from the database, then enforced in every Qdrant query."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.identity.principal import Principal
from api.rag.collections import collection_owners, readable_collection, readable_collection_ids
from api.rag.documents import chunk_out, documents_collections
from api.rag.embedder import EMPTY_USAGE, Embedder, add_usage
from api.rag.schemas import SearchArgs, SearchMethod, SearchResult
from api.rag.vectors import Scope, SearchQuery, VectorStore

RERANK_CANDIDATES = 4  # candidates fetched per result kept when re-ranking


async def scope_for(session: AsyncSession, caller: Principal, args: SearchArgs) -> Scope:
    """The collections and documents to search: those asked for, each checked readable (404
    otherwise), or, when none are named, every collection the caller may read."""
    collection_ids = set()
    for collection_id in args.collection_ids:
        collection_ids.add((await readable_collection(session, caller, collection_id)).id)
    if args.document_ids:
        by_document = await documents_collections(session, caller, list(args.document_ids))
        if not args.collection_ids:
            collection_ids.update(by_document.values())
    if not args.collection_ids and not args.document_ids:
        collection_ids.update(await readable_collection_ids(session, caller))
    owners = await collection_owners(session, sorted(collection_ids)) if collection_ids else {}
    return Scope(sorted(owners), sorted(set(args.document_ids)), owners)


async def search(
    session: AsyncSession, vectors: VectorStore, embedder: Embedder, caller: Principal, args: SearchArgs, query: str
) -> tuple[list[SearchResult], dict[str, Any]]:
    embedder.require()
    scope = await scope_for(session, caller, args)
    await session.rollback()  # no transaction held during model calls
    usage: dict[str, Any] = EMPTY_USAGE
    query_vector = None
    if args.method is not SearchMethod.lexical and scope.collection_ids:
        embedder.check_lengths([query], "The query")
        embedded, embed_usage = await embedder.embed(caller, [query])
        query_vector = embedded[0]
        usage = add_usage(usage, embed_usage)
    limit, offset = args.limit, args.offset
    if args.rerank_model:
        limit, offset = (args.offset + args.limit) * RERANK_CANDIDATES, 0
    found = await vectors.search(scope, SearchQuery(
        method=args.method, text=query, vector=query_vector, metadata_filter=args.metadata_filters, limit=limit, offset=offset,
        score_threshold=args.score_threshold, fusion=args.fusion, rrf_k=max(1, args.rrf_k),
        semantic_weight=args.weights.semantic, lexical_weight=args.weights.lexical,
        max_chunks_per_document=args.max_chunks_per_document,
    ))
    results = [SearchResult(method=args.method, score=score, chunk=chunk_out(chunk)) for chunk, score in found]
    if args.rerank_model and results:
        ranked, rerank_usage = await embedder.rerank(caller, args.rerank_model, query, [r.chunk.content for r in results])
        usage = add_usage(usage, rerank_usage)
        results = [results[index].model_copy(update={"score": score}) for index, score in ranked]
        results = results[args.offset:args.offset + args.limit]
    return results, usage


class Searcher:
    """Search with a session of its own, for callers that hold none (a chat with search)."""

    def __init__(self, session_factory: async_sessionmaker[AsyncSession], vectors: VectorStore, embedder: Embedder) -> None:
        self._session_factory = session_factory
        self.vectors = vectors
        self.embedder = embedder

    async def search(self, caller: Principal, args: SearchArgs, query: str) -> tuple[list[SearchResult], dict[str, Any]]:
        async with self._session_factory() as session:
            return await search(session, self.vectors, self.embedder, caller, args, query)

    async def results(self, caller: Principal, args: SearchArgs, query: str) -> list[SearchResult]:
        return (await self.search(caller, args, query))[0]
