"""/v1/models, /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/rerank, /v1/audio/transcriptions.

Each model endpoint builds its operation, runs it through the call pipeline and renders the
finished call; the pipeline resolves, authorises, admits, forwards, settles and records.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Header, Path, UploadFile
from fastapi.responses import Response, StreamingResponse

from api.calls.access import may_call
from api.calls.caching import replayed_stream
from api.calls.call import Call, Operation
from api.calls.operations import Completion, Embeddings, Rerank, Transcription
from api.calls.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingsRequest, ModelName, RerankRequest, TaggedRequest, as_upstream_body
from api.calls.streaming import ChatStreamRelay
from api.catalog.catalog import RouterEntry, no_provider
from api.catalog.router_admin import micros_to_price
from api.catalog.schemas import ModelCosts, ModelList, ModelOut
from api.common.schemas import MODEL_ERRORS
from api.errors import NotFoundError
from api.http.deps import CatalogDep, Caller, GatewayDep, PipelineDep, SearcherDep, SettingsDep
from api.http.responses import ChatStreamResponse, FastJSONResponse
from api.identity.principal import Principal
from api.providers import Endpoint
from api.rag.chat import ChatWithSearch
from api.usage.tags import header_tag

routes = APIRouter(prefix="/v1", tags=["models"], responses=MODEL_ERRORS)

OVERHEAD_HEADER = "x-tollgate-overhead-ms"
REQUEST_ID_HEADER = "x-tollgate-request-id"


def _model_out(entry: RouterEntry) -> ModelOut:
    return ModelOut(
        id=entry.name, type=entry.type, aliases=list(entry.aliases), created=entry.created, owned_by="tollgate",
        max_context_length=entry.max_context_length,
        costs=ModelCosts(prompt_tokens=micros_to_price(entry.cost_prompt_micros),
                         completion_tokens=micros_to_price(entry.cost_completion_micros)),
    )


def call_headers(call: Call) -> dict[str, str]:
    return {**call.headers, OVERHEAD_HEADER: f"{call.overhead_ms():.3f}", REQUEST_ID_HEADER: call.request_id}


# Documented here; the JSON endpoints' own routes (json_model_routes.py) read it themselves.
TagHeader = Annotated[
    str | None,
    Header(alias="X-Tollgate-Tag", description="A tag for the reports (1 to 64 letters, digits and _ . : / @ + = -); "
           "wins over the body's metadata.tag."),
]


def _tagged(caller: Principal, request: TaggedRequest, operation: Operation, endpoint: Endpoint, tag: str | None) -> Call:
    return Call(caller, request.model, operation, endpoint.value, tag=request.tag(header_tag(tag)), end_user=request.user)


def _answer(call: Call) -> FastJSONResponse:
    assert call.answer is not None
    return FastJSONResponse(call.answer, headers=call_headers(call))


@routes.post("/chat/completions", response_model=None)
async def chat_completions(
    request: ChatCompletionRequest, caller: Caller, pipeline: PipelineDep, searcher: SearcherDep, settings: SettingsDep,
    x_tollgate_tag: TagHeader = None,
) -> Response:
    operation = ChatWithSearch(as_upstream_body(request), search=searcher.results, template=settings.settings.rag.search_template)
    call = await pipeline.run(_tagged(caller, request, operation, Endpoint.chat, x_tollgate_tag))
    if call.stream is not None:
        relay = ChatStreamRelay(call, operation.body, operation.final_fields)
        return ChatStreamResponse(relay, headers=call_headers(call))
    if operation.streamed:  # answered from the cache: as the stream it asked for
        return StreamingResponse(replayed_stream(call, operation.final_fields), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", **call_headers(call)})
    return _answer(call)


@routes.post("/completions", response_model=None)
async def completions(
    request: CompletionRequest, caller: Caller, pipeline: PipelineDep, x_tollgate_tag: TagHeader = None
) -> Response:
    """A legacy text completion, on a text-generation router whose providers serve it (vLLM, llama.cpp)."""
    operation = Completion(as_upstream_body(request))
    call = await pipeline.run(_tagged(caller, request, operation, Endpoint.completions, x_tollgate_tag))
    if call.stream is not None:
        return ChatStreamResponse(ChatStreamRelay(call, operation.body), headers=call_headers(call))
    return _answer(call)


@routes.post("/embeddings")
async def create_embeddings(
    request: EmbeddingsRequest, caller: Caller, pipeline: PipelineDep, x_tollgate_tag: TagHeader = None
) -> Response:
    call = await pipeline.run(_tagged(caller, request, Embeddings(as_upstream_body(request)), Endpoint.embeddings, x_tollgate_tag))
    return _answer(call)


@routes.post("/rerank")
async def create_rerank(
    request: RerankRequest, caller: Caller, pipeline: PipelineDep, x_tollgate_tag: TagHeader = None
) -> Response:
    call = await pipeline.run(_tagged(caller, request, Rerank(as_upstream_body(request)), Endpoint.rerank, x_tollgate_tag))
    return _answer(call)


@routes.post("/audio/transcriptions")
async def create_transcription(
    caller: Caller,
    pipeline: PipelineDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File()],
    model: Annotated[ModelName, Form()],
    language: Annotated[str | None, Form(max_length=32)] = None,
    prompt: Annotated[str | None, Form(max_length=10_000)] = None,
    response_format: Annotated[str | None, Form(pattern="^(json|text|srt|vtt|verbose_json)$")] = None,
    temperature: Annotated[float | None, Form(ge=0, le=1)] = None,
    x_tollgate_tag: TagHeader = None,
) -> Response:
    fields = {
        name: str(value)
        for name, value in (("language", language), ("prompt", prompt), ("temperature", temperature),
                            ("response_format", response_format))
        if value not in (None, "")
    }
    operation = Transcription(
        await file.read(), file.filename or "audio", file.content_type or "application/octet-stream", fields,
        settings.settings.gateway.default_max_tokens,
    )
    call = await pipeline.run(Call(caller, model, operation, Endpoint.transcriptions.value, tag=header_tag(x_tollgate_tag)))
    if call.raw_answer is not None:  # text, srt or vtt: as the provider answered it
        content, content_type = call.raw_answer
        return Response(content, headers={**call_headers(call), "Content-Type": content_type})
    return _answer(call)


# After the endpoints that carry the traffic: routes are matched in the order they are defined.
@routes.get("/models")
async def list_models(caller: Caller, gateway: GatewayDep) -> ModelList:
    return ModelList(data=[_model_out(r) for r in gateway.visible_routers(caller)])


@routes.get("/models/{model:path}")
async def get_model(model: Annotated[str, Path(max_length=255)], caller: Caller, catalog: CatalogDep) -> ModelOut:
    entry = catalog.resolve(model)
    if entry is None or not may_call(catalog, caller, entry):
        raise NotFoundError(f"Model '{model}' not found")
    if not entry.servable:
        raise no_provider(entry)
    return _model_out(entry)
