"""/v1/collections, /v1/documents (and their chunks), /v1/search."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, Response, UploadFile
from fastapi.responses import JSONResponse

from api.common.listing import PageRequest
from api.common.schemas import CLIENT_ERRORS, MAX_ID, MODEL_ERRORS, ListPage, Name, error_responses
from api.http.deps import Caller, EmbedderDep, IngestionDep, LocalCallsDep, OcrDep, page_params, Session, SettingsDep, VectorsDep
from api.http.params import ChunkId, PathId, QueryId
from api.errors import InvalidRequestError, PayloadTooLargeError, UnsupportedMediaTypeError
from api.calls.call import Call
from api.calls.operations import LocalWork
from api.identity.schemas import Created
from api.rag import collections, documents, parsing, search
from api.rag import ocr as ocr_service
from api.rag.schemas import (
    ChunkOut,
    ChunksCreate,
    ChunksCreated,
    CollectionCreate,
    CollectionOut,
    CollectionUpdate,
    DocumentOut,
    OcrRequest,
    SearchRequest,
    SearchResponse,
    Visibility,
    check_metadata,
)

# Uploads of a type that cannot be read are 415; routes that embed, rerank or OCR declare the
# errors of a model call too (MODEL_ERRORS).
routes = APIRouter(prefix="/v1", responses={**CLIENT_ERRORS, **error_responses(415)})

CollectionPage = Annotated[PageRequest, Depends(page_params("CollectionOrderBy", collections.ORDER_COLUMNS))]
DocumentPage = Annotated[PageRequest, Depends(page_params("DocumentOrderBy", documents.ORDER_COLUMNS))]
UPLOAD_PATHS = ("/v1/documents", "/v1/parse", "/v1/parse-beta", "/v1/ocr")


@routes.post("/collections", status_code=201, tags=["collections"])
async def create_collection(body: CollectionCreate, caller: Caller, session: Session) -> Created:
    return Created(id=await collections.create_collection(session, caller, body))


@routes.get("/collections", tags=["collections"])
async def list_collections(
    caller: Caller, session: Session, page: CollectionPage,
    name: Annotated[Name | None, Query()] = None, visibility: Annotated[Visibility | None, Query()] = None,
) -> ListPage[CollectionOut]:
    data, total = await collections.list_collections(session, caller, page, name, visibility)
    return ListPage(data=data, total=total)


@routes.get("/collections/{collection_id}", tags=["collections"])
async def get_collection(collection_id: PathId, caller: Caller, session: Session) -> CollectionOut:
    return await collections.get_collection(session, caller, collection_id)


@routes.patch("/collections/{collection_id}", status_code=204, tags=["collections"])
async def update_collection(collection_id: PathId, body: CollectionUpdate, caller: Caller, session: Session) -> Response:
    await collections.update_collection(session, caller, collection_id, body)
    return Response(status_code=204)


@routes.delete("/collections/{collection_id}", status_code=204, tags=["collections"])
async def delete_collection(collection_id: PathId, caller: Caller, session: Session, vectors: VectorsDep) -> Response:
    await collections.delete_collection(session, vectors, caller, collection_id)
    return Response(status_code=204)


def _metadata(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise InvalidRequestError("metadata must be a JSON object") from exc
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, (str, int, float, bool, type(None))) for k, v in value.items()
    ):
        raise InvalidRequestError("metadata must be a JSON object of strings, numbers and booleans")
    try:
        return check_metadata(value) or {}
    except ValueError as exc:
        raise InvalidRequestError(str(exc)) from exc


async def _read_upload(file: UploadFile, max_bytes: int) -> documents.Upload:
    content = await file.read(max_bytes + 1)
    if len(content) > max_bytes:
        raise PayloadTooLargeError(f"The file is larger than {max_bytes} bytes")
    # Only the last path component: a name like ../../etc/passwd is just "passwd".
    filename = (file.filename or "file").replace("\\", "/").rsplit("/", 1)[-1][:255]
    if filename in ("", ".", ".."):  # no name left, or one that means a directory
        filename = "file"
    return documents.Upload(filename, file.content_type, content)


@routes.post("/documents", status_code=201, tags=["documents"])
async def create_document(
    caller: Caller,
    session: Session,
    embedder: EmbedderDep, settings: SettingsDep, ingestion: IngestionDep,
    file: Annotated[UploadFile | None, File()] = None,
    name: Annotated[str | None, Form(min_length=1, max_length=255)] = None,
    collection_id: Annotated[int | None, Form(ge=1, le=MAX_ID)] = None,
    collection: Annotated[int | None, Form(ge=1, le=MAX_ID, deprecated=True)] = None,
    disable_chunking: Annotated[bool, Form()] = False,
    chunk_size: Annotated[int, Form(ge=0, le=1_000_000)] = 2048,
    chunk_min_size: Annotated[int, Form(ge=0, le=1_000_000)] = 0,
    chunk_overlap: Annotated[int, Form(ge=0, le=1_000_000)] = 0,
    is_separator_regex: Annotated[bool, Form()] = False,
    separators: Annotated[list[Annotated[str, Form(max_length=100)]], Form(max_length=100)] = [],  # noqa: B006
    preset_separators: Annotated[parsing.Language, Form()] = parsing.Language.MARKDOWN,
    metadata: Annotated[str | None, Form(max_length=100_000)] = None,
) -> Created:
    target = collection_id or collection
    if target is None:
        raise InvalidRequestError("collection_id is required")
    embedder.require()
    upload = await _read_upload(file, settings.settings.rag.max_upload_bytes) if file is not None else None
    options = parsing.SplitOptions(
        chunk_size=chunk_size, chunk_min_size=chunk_min_size, chunk_overlap=chunk_overlap,
        separators=tuple(s for s in separators if s), is_separator_regex=is_separator_regex,
        preset_separators=preset_separators.value, disable_chunking=disable_chunking or chunk_size == 0,
    )
    document = await documents.create_document(
        session, caller, target, name, upload, options, _metadata(metadata), settings.settings.rag.max_upload_bytes
    )
    if upload is not None:
        ingestion.notify()
    return Created(id=document.id)


@routes.get("/documents", tags=["documents"])
async def list_documents(
    caller: Caller, session: Session, page: DocumentPage,
    collection_id: QueryId = None,
    name: Annotated[Name | None, Query()] = None,
) -> ListPage[DocumentOut]:
    data, total = await documents.list_documents(session, caller, page, collection_id, name)
    return ListPage(data=data, total=total)


@routes.get("/documents/{document_id}", tags=["documents"])
async def get_document(document_id: PathId, caller: Caller, session: Session) -> DocumentOut:
    return documents.document_out(await documents.readable_document(session, caller, document_id))


@routes.delete("/documents/{document_id}", status_code=204, tags=["documents"])
async def delete_document(document_id: PathId, caller: Caller, session: Session, vectors: VectorsDep) -> Response:
    await documents.delete_document(session, vectors, caller, document_id)
    return Response(status_code=204)


@routes.post("/documents/{document_id}/chunks", status_code=201, tags=["documents"], responses=MODEL_ERRORS)
async def create_chunks(
    document_id: PathId, body: ChunksCreate, caller: Caller, session: Session, vectors: VectorsDep, embedder:
    EmbedderDep
) -> ChunksCreated:
    ids, _ = await documents.add_chunks(session, vectors, embedder, caller, document_id, body.chunks)
    return ChunksCreated(ids=ids)


ChunkLimit = Annotated[int, Query(ge=1, le=100)]
ChunkOffset = Annotated[int, Query(ge=0, le=2**24)]


@routes.get("/documents/{document_id}/chunks", tags=["documents"])
async def list_chunks(
    document_id: PathId, caller: Caller, session: Session, vectors: VectorsDep, limit: ChunkLimit = 10, offset: ChunkOffset = 0,
) -> ListPage[ChunkOut]:
    data = await documents.list_chunks(session, vectors, caller, document_id, offset, limit)
    document = await documents.readable_document(session, caller, document_id)
    return ListPage(data=data, total=document.chunks)


@routes.get("/documents/{document_id}/chunks/{chunk_id}", tags=["documents"])
async def get_chunk(document_id: PathId, chunk_id: ChunkId, caller: Caller, session: Session, vectors: VectorsDep) -> ChunkOut:
    return await documents.get_chunk(session, vectors, caller, document_id, chunk_id)


# OpenGateLLM's older paths to the same chunks, for the clients that still call them.
@routes.get("/chunks/{document}", tags=["documents"], deprecated=True)
async def list_chunks_legacy(
    document: PathId, caller: Caller, session: Session, vectors: VectorsDep, limit: ChunkLimit = 10, offset: ChunkOffset = 0,
) -> ListPage[ChunkOut]:
    """`GET /v1/documents/{document_id}/chunks` under its older path."""
    return await list_chunks(document, caller, session, vectors, limit, offset)


@routes.get("/chunks/{document}/{chunk}", tags=["documents"], deprecated=True)
async def get_chunk_legacy(document: PathId, chunk: ChunkId, caller: Caller, session: Session, vectors: VectorsDep) -> ChunkOut:
    """`GET /v1/documents/{document_id}/chunks/{chunk_id}` under its older path."""
    return await documents.get_chunk(session, vectors, caller, document, chunk)


@routes.delete("/documents/{document_id}/chunks/{chunk_id}", status_code=204, tags=["documents"])
async def delete_chunk(document_id: PathId, chunk_id: ChunkId, caller: Caller, session: Session, vectors: VectorsDep) -> Response:
    await documents.delete_chunk(session, vectors, caller, document_id, chunk_id)
    return Response(status_code=204)


@routes.post("/search", tags=["search"], responses=MODEL_ERRORS)
async def search_chunks(
    body: SearchRequest, caller: Caller, session: Session, vectors: VectorsDep, embedder: EmbedderDep
) -> SearchResponse:
    results, usage = await search.search(session, vectors, embedder, caller, body, body.query)
    return SearchResponse(data=results, usage=usage)


@routes.post("/ocr", tags=["ocr"], responses=MODEL_ERRORS)
async def ocr(body: OcrRequest, caller: Caller, settings: SettingsDep, ocr: OcrDep) -> JSONResponse:
    model = body.model or settings.settings.rag.ocr_model
    if model is None:
        raise InvalidRequestError("model is required (no default OCR model is configured)")
    request = body.model_dump(exclude_unset=True, exclude={"model"})
    return JSONResponse(await ocr.ocr(caller, model, request))


@routes.post("/parse", tags=["ocr"], responses=MODEL_ERRORS)
@routes.post("/parse-beta", tags=["ocr"], include_in_schema=False)
async def parse(
    caller: Caller,
    settings: SettingsDep, ocr: OcrDep, local_calls: LocalCallsDep,
    file: Annotated[UploadFile, File()],
    page_range: Annotated[str, Form(max_length=1000)] = "",
    force_ocr: Annotated[bool, Form()] = False,
) -> JSONResponse:
    upload = await _read_upload(file, settings.settings.rag.max_upload_bytes)
    if parsing.kind_of(upload.filename, upload.content_type) != "pdf":
        raise UnsupportedMediaTypeError("Only PDF files can be parsed")
    if not upload.content:
        raise InvalidRequestError("The file is empty")
    if force_ocr:
        result = await ocr_service.parse_pdf(ocr, caller, settings.settings.rag.ocr_model,
                                             upload.filename, upload.content, page_range, force_ocr)
    else:
        # No model call, but a request like any other in the usage records.
        async def read_text_layer() -> dict[str, Any]:
            return await ocr_service.parse_pdf(ocr, caller, None, upload.filename, upload.content, page_range, False)

        call = await local_calls.run(Call(caller, None, LocalWork(read_text_layer), "/v1/parse"))
        assert call.answer is not None
        result = call.answer
    return JSONResponse(result)
