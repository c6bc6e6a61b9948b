"""Documents and their chunks. An uploaded file is checked here and ingested by a job; chunks
added by hand are embedded at once."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.common.listing import PageRequest, fetch_page
from api.common.schemas import to_unix
from api.db.tables import Collection, Document, DocumentFile
from api.errors import ConflictError, InvalidRequestError, NotFoundError, PayloadTooLargeError, PermissionDeniedError
from api.identity.principal import Principal
from api.rag import parsing
from api.rag.collections import owner_of, readable, writable_collection
from api.rag.embedder import Embedder
from api.rag.schemas import ChunkIn, ChunkOut, DocumentOut, DocumentStatus
from api.rag.vectors import NewChunk, StoredChunk, VectorStore

ORDER_COLUMNS = {"id": Document.id, "name": Document.name, "created": Document.created}


@dataclass(frozen=True)
class Upload:
    filename: str
    content_type: str | None
    content: bytes


def document_out(document: Document) -> DocumentOut:
    if document.status == DocumentStatus.ready.value:
        progress = 1.0
    else:
        progress = document.progress_done / document.progress_total if document.progress_total else 0.0
    return DocumentOut(
        id=document.id, name=document.name, collection_id=document.collection_id, created=to_unix(document.created) or 0,
        chunks=document.chunks, status=DocumentStatus(document.status), error=document.error, pages=document.pages,
        progress=round(progress, 4),
    )


def chunk_out(chunk: StoredChunk) -> ChunkOut:
    return ChunkOut(
        id=chunk.chunk_id, collection_id=chunk.collection_id, document_id=chunk.document_id,
        content=chunk.content, metadata=chunk.metadata, created=chunk.created,
    )


async def create_document(
    session: AsyncSession,
    caller: Principal,
    collection_id: int,
    name: str | None,
    upload: Upload | None,
    options: parsing.SplitOptions,
    metadata: dict[str, Any],
    max_upload_bytes: int,
) -> Document:
    """A document: from a file (checked now, ingested by a job) or empty, to fill with chunks.
    Its owner is its collection's, whose vector shard (`VectorStore`) holds its chunks."""
    owner = owner_of(caller)
    await writable_collection(session, caller, collection_id)
    if upload is None:
        if not name:
            raise InvalidRequestError("Give a file, or a name for a document to fill with chunks")
        document = Document(collection_id=collection_id, user_id=owner, name=name, status=DocumentStatus.ready.value, options={})
        session.add(document)
        await session.commit()
        return document
    if len(upload.content) > max_upload_bytes:
        raise PayloadTooLargeError(f"The file is larger than {max_upload_bytes} bytes")
    kind = parsing.kind_of(upload.filename, upload.content_type)
    # Reading a PDF's structure is CPU work: off the event loop.
    pages = await asyncio.to_thread(parsing.check, upload.content, kind)
    document = Document(
        collection_id=collection_id, user_id=owner, name=name or upload.filename, status=DocumentStatus.processing.value,
        pages=pages, content_type=upload.content_type, size_bytes=len(upload.content),
        options={"kind": kind, "split": options.as_dict(), "metadata": metadata},
    )
    session.add(document)
    await session.flush()
    session.add(DocumentFile(document_id=document.id, filename=upload.filename, content=upload.content))
    await session.commit()
    return document


def _readable_documents() -> Select[tuple[Document]]:
    return select(Document).join(Collection, Collection.id == Document.collection_id)


async def list_documents(
    session: AsyncSession, caller: Principal, page: PageRequest, collection_id: int | None, name: str | None
) -> tuple[list[DocumentOut], int]:
    query = _readable_documents().where(readable(caller))  # type: ignore[arg-type]
    if collection_id is not None:
        query = query.where(Document.collection_id == collection_id)
    if name is not None:
        query = query.where(Document.name == name)
    rows, total = await fetch_page(session, query, ORDER_COLUMNS[page.order_by], Document.id, page)
    return [document_out(row[0]) for row in rows], total


async def readable_document(session: AsyncSession, caller: Principal, document_id: int) -> Document:
    document = (
        await session.execute(_readable_documents().where(Document.id == document_id, readable(caller)))  # type: ignore[arg-type]
    ).scalar_one_or_none()
    if document is None:
        raise NotFoundError(f"Document {document_id} not found")
    return document


async def writable_document(session: AsyncSession, caller: Principal, document_id: int) -> Document:
    document = await readable_document(session, caller, document_id)
    owner = (await session.execute(select(Collection.user_id).where(Collection.id == document.collection_id))).scalar_one()
    if owner != caller.user_id:
        raise PermissionDeniedError(f"Document {document_id} is not yours to change")
    return document


async def documents_collections(session: AsyncSession, caller: Principal, document_ids: list[int]) -> dict[int, int]:
    """Each readable document's collection; an unknown or unreadable one is a 404."""
    rows = (
        await session.execute(
            select(Document.id, Document.collection_id)
            .join(Collection, Collection.id == Document.collection_id)
            .where(Document.id.in_(document_ids), readable(caller))  # type: ignore[arg-type]
        )
    ).all()
    found = dict(rows)  # type: ignore[arg-type]
    missing = [d for d in document_ids if d not in found]
    if missing:
        raise NotFoundError(f"Document {missing[0]} not found")
    return found


async def delete_document(session: AsyncSession, vectors: VectorStore, caller: Principal, document_id: int) -> None:
    document = await writable_document(session, caller, document_id)
    await vectors.delete(document.user_id, document_id=document_id)
    await session.delete(document)
    await session.commit()


async def add_chunks(
    session: AsyncSession, vectors: VectorStore, embedder: Embedder, caller: Principal, document_id: int, chunks: list[ChunkIn]
) -> tuple[list[int], dict[str, Any]]:
    """Embed the chunks (charged to the caller), then give them ids and store them."""
    document = await writable_document(session, caller, document_id)
    if document.status != DocumentStatus.ready.value:
        raise ConflictError(f"Document {document_id} is {document.status}: chunks can be added once it is ready")
    collection_id, owner = document.collection_id, document.user_id
    embedder.check_lengths([chunk.content for chunk in chunks], "Chunk")
    await session.rollback()  # no transaction held during the embedding call
    embedded, usage = await embedder.embed(caller, [chunk.content for chunk in chunks])
    first = (
        await session.execute(
            update(Document).where(Document.id == document_id)
            .values(next_chunk_id=Document.next_chunk_id + len(chunks), chunks=Document.chunks + len(chunks))
            .returning(Document.next_chunk_id)
        )
    ).scalar_one_or_none()
    if first is None:
        raise NotFoundError(f"Document {document_id} not found")
    await session.commit()
    ids = list(range(first - len(chunks), first))
    new = [NewChunk(chunk_id, chunk.content, dict(chunk.metadata or {})) for chunk_id, chunk in zip(ids, chunks, strict=True)]
    try:
        await vectors.upsert(owner, collection_id, document_id, new, embedded, ready=True, created=int(datetime.now(UTC).timestamp()))
    except BaseException:
        await session.execute(update(Document).where(Document.id == document_id).values(chunks=Document.chunks - len(chunks)))
        await session.commit()
        raise
    return ids, usage


async def list_chunks(
    session: AsyncSession, vectors: VectorStore, caller: Principal, document_id: int, offset: int, limit: int
) -> list[ChunkOut]:
    document = await readable_document(session, caller, document_id)
    return [chunk_out(chunk) for chunk in await vectors.chunks(document.user_id, document_id, offset, limit)]


async def get_chunk(session: AsyncSession, vectors: VectorStore, caller: Principal, document_id: int, chunk_id: int) -> ChunkOut:
    document = await readable_document(session, caller, document_id)
    chunk = await vectors.chunk(document.user_id, document_id, chunk_id)
    if chunk is None or chunk.document_id != document_id:
        raise NotFoundError(f"Chunk {chunk_id} of document {document_id} not found")
    return chunk_out(chunk)


async def delete_chunk(session: AsyncSession, vectors: VectorStore, caller: Principal, document_id: int, chunk_id: int) -> None:
    owner = (await writable_document(session, caller, document_id)).user_id
    if await vectors.chunk(owner, document_id, chunk_id) is None:
        raise NotFoundError(f"Chunk {chunk_id} of document {document_id} not found")
    await vectors.delete(owner, document_id=document_id, chunk_id=chunk_id)
    await session.execute(update(Document).where(Document.id == document_id).values(chunks=Document.chunks - 1))
    await session.commit()
