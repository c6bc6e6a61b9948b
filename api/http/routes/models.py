"""/v1/models, /v1/chat/completions, /v1/embeddings, /v1/rerank, /v1/audio/transcriptions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Path, UploadFile
from fastapi.responses import JSONResponse, Response
from starlette.background import BackgroundTask

from api.common.jsonutil import FastJSONResponse
from api.common.schemas import MODEL_ERRORS
from api.http.context import AppContext
from api.http.deps import Caller, Context
from api.identity.auth import Principal
from api.calls.tokens import count_inputs, count_messages, count_text
from api.errors import NotFoundError
from api.calls import service
from api.http.model_route import ModelRoute
from api.calls.schemas import ChatCompletionRequest, EmbeddingsRequest, RerankRequest, as_upstream_body
from api.calls.streaming import MeteredStreamingResponse
from api.catalog.catalog import RouterEntry
from api.catalog.routers import micros_to_price
from api.catalog.schemas import ModelCosts, ModelList, ModelOut
from api.providers import Endpoint
from api.rag import chat as rag_chat
from api.rag import search as rag_search
from api.rag.schemas import SearchArgs
from api.usage.meter import Meter

router = APIRouter(prefix="/v1", tags=["models"], responses=MODEL_ERRORS, route_class=ModelRoute)

OVERHEAD_HEADER = "x-tollgate-overhead-ms"
REQUEST_ID_HEADER = "x-tollgate-request-id"


def _model_out(entry: RouterEntry) -> ModelOut:
    return ModelOut(
        id=entry.name, type=entry.type, aliases=list(entry.aliases), created=entry.created, owned_by="tollgate",
        max_context_length=entry.max_context_length,
        costs=ModelCosts(prompt_tokens=micros_to_price(entry.cost_prompt_micros),
                         completion_tokens=micros_to_price(entry.cost_completion_micros)),
    )


def _headers(meter: Meter) -> dict[str, str]:
    return {**meter.headers, OVERHEAD_HEADER: f"{meter.overhead_ms():.3f}", REQUEST_ID_HEADER: meter.request_id}


def _json(meter: Meter, content: dict[str, Any]) -> JSONResponse:
    # Limits and budget are settled once the answer has left: the client does not wait for it.
    return FastJSONResponse(content, headers=_headers(meter), background=BackgroundTask(meter.settle))


def _once(compute: Callable[[], int]) -> Callable[[], int]:
    """A token estimate computed at most once, and only if a limit or a budget needs it."""
    value: list[int] = []

    def get() -> int:
        if not value:
            value.append(compute())
        return value[0]

    return get


def _meter(context: AppContext, caller: Principal, endpoint: Endpoint, model: str) -> Meter:
    meter = Meter(context.usage_writer, caller, endpoint.value, observe=context.metrics.observe)
    meter.model = model
    # Settled once the answer has left (a JSON answer's background task, a stream's end): the
    # client never waits for that round trip.
    meter.settle_after_response()
    return meter


async def _route_and_admit(
    context: AppContext,
    caller: Principal,
    meter: Meter,
    endpoint: Endpoint,
    estimate: Callable[[], int],
    max_completion_tokens: int = 0,
) -> None:
    await service.route_and_admit(context.gateway, context.quotas, caller, meter, endpoint, estimate, max_completion_tokens)


@router.post("/chat/completions", response_model=None)
async def chat_completions(request: ChatCompletionRequest, caller: Caller, context: Context) -> Response:
    meter = _meter(context, caller, Endpoint.chat, request.model)
    body = as_upstream_body(request)
    async with service.metered(meter):
        search = rag_chat.search_request(body)
        search_results = await _search_for_chat(context, caller, body, search) if search is not None else None
        # Resolved here as well as in route_and_admit: the bound depends on the router's limits.
        chat_router = context.gateway.resolve(caller, request.model, Endpoint.chat)
        completion_bound = context.quotas.cap_completion(caller, chat_router, body)
        await _route_and_admit(
            context, caller, meter, Endpoint.chat, _once(lambda: count_messages(body["messages"])), completion_bound
        )
        extra = {} if search_results is None else {"search_results": search_results}
        if request.stream:
            relay = await service.open_chat_stream(context.gateway, meter, body, caller.priority, extra)
            return MeteredStreamingResponse(relay, headers=_headers(meter))
        answer = await service.chat_completion(context.gateway, meter, body, caller.priority)
        answer.update(extra)
        return _json(meter, answer)


async def _search_for_chat(context: AppContext, caller: Principal, body: dict[str, Any], args: SearchArgs) -> list[dict[str, Any]]:
    """Search for the last user message and put the chunks found into the prompt."""
    index, prompt = rag_chat.last_user_text(body["messages"])
    async with context.session_factory() as session:
        results, _ = await rag_search.search(session, context.vectors, context.embedder, caller, args, prompt)
    rag_chat.with_chunks(body, index, prompt, results, context.settings.settings.rag.search_template)
    return [result.model_dump() for result in results]


@router.post("/embeddings")
async def create_embeddings(request: EmbeddingsRequest, caller: Caller, context: Context) -> JSONResponse:
    meter = _meter(context, caller, Endpoint.embeddings, request.model)
    async with service.metered(meter):
        body = as_upstream_body(request)
        await _route_and_admit(context, caller, meter, Endpoint.embeddings, _once(lambda: count_inputs(body["input"])))
        return _json(meter, await service.embeddings(context.gateway, meter, body, caller.priority))


@router.post("/rerank")
async def create_rerank(request: RerankRequest, caller: Caller, context: Context) -> JSONResponse:
    meter = _meter(context, caller, Endpoint.rerank, request.model)
    async with service.metered(meter):
        body = as_upstream_body(request)
        await _route_and_admit(
            context, caller, meter, Endpoint.rerank,
            _once(lambda: count_text(request.query) + sum(count_text(d) for d in request.documents)),
        )
        return _json(meter, await service.rerank(context.gateway, meter, body, caller.priority))


@router.post("/audio/transcriptions")
async def create_transcription(
    caller: Caller,
    context: Context,
    file: Annotated[UploadFile, File()],
    model: Annotated[str, Form(min_length=1, max_length=255)],
    language: Annotated[str | None, Form(max_length=32)] = None,
    prompt: Annotated[str | None, Form(max_length=10_000)] = None,
    response_format: Annotated[str | None, Form(pattern="^(json|text)$")] = None,
    temperature: Annotated[float | None, Form(ge=0, le=1)] = None,
) -> JSONResponse:
    meter = _meter(context, caller, Endpoint.transcriptions, model)
    async with service.metered(meter):
        # The audio's length in tokens is unknown before it is transcribed: settle counts it.
        await _route_and_admit(
            context, caller, meter, Endpoint.transcriptions, lambda: 0, context.quotas.budgeter.default_max_tokens
        )
        fields = {
            name: str(value)
            for name, value in (("language", language), ("prompt", prompt), ("temperature", temperature))
            if value not in (None, "")
        }
        # Always JSON from the provider, so the usage can be attached.
        fields["response_format"] = "json"
        audio = await file.read()
        result = await service.transcribe(
            context.gateway, meter, audio, file.filename or "audio", file.content_type or "application/octet-stream",
            fields, caller.priority,
        )
        return _json(meter, result)


# After the endpoints that carry the traffic: routes are matched in the order they are defined.
@router.get("/models")
async def list_models(caller: Caller, context: Context) -> ModelList:
    return ModelList(data=[_model_out(r) for r in context.gateway.visible_routers(caller)])


@router.get("/models/{model:path}")
async def get_model(model: Annotated[str, Path(max_length=255)], caller: Caller, context: Context) -> ModelOut:
    entry = context.catalog.resolve(model)
    if entry is None or not caller.may_use(entry.id):
        raise NotFoundError(f"Model '{model}' not found")
    return _model_out(entry)
