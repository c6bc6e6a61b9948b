"""`POST /v1/messages`: Anthropic's Messages API on any chat router, so that Anthropic's SDK (and
the tools built on it) work against Tollgate unmodified. The request is translated to a chat
call and run through the same pipeline (keys, limits, budgets, policies, records: the record's
endpoint is `/v1/messages`); the answer, the stream and the errors go back in Anthropic's shapes
(`api/http/anthropic_messages.py`).

The key is read from `x-api-key` (Anthropic's SDK) or `Authorization: Bearer`. A plain Starlette
route, like the JSON model routes: every error, a body that is not JSON included, is Anthropic's
`{"type": "error", "error": {...}}` with the status FastAPI's handlers would give it (a body
that fails validation is a 400, as Anthropic answers it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from api.calls.call import Call
from api.calls.caching import replayed_stream
from api.calls.operations import Chat
from api.calls.streaming import ChatStreamRelay
from api.common import jsonutil
from api.errors import DomainError
from api.http.anthropic_messages import ErrorResponse, MessageEvents, MessagesRequest, chat_request, error_body, message
from api.http.context import AppContext
from api.http.error_handlers import error_status, validation_details
from api.http.responses import ChatStreamResponse, FastJSONResponse
from api.http.routes.models import call_headers
from api.usage.tags import TAG_HEADER, header_tag

PATH = "/v1/messages"


def _error(status: int, detail: object, headers: dict[str, str] | None = None) -> Response:
    return FastJSONResponse(error_body(status, detail), status_code=status, headers=headers)


async def create_message(request: Request) -> Response:
    context: AppContext = request.app.state.context
    try:
        raw = await request.body()
        try:
            data = jsonutil.loads(raw) if raw else None
        except ValueError:
            return _error(400, "The request body is not valid JSON")
        key = request.headers.get("x-api-key")
        caller = await context.authenticator.authenticate(request.headers.get("authorization") or (f"Bearer {key}" if key else None))
        try:
            body = MessagesRequest.model_validate(data)
        except ValidationError as invalid:
            details = validation_details(RequestValidationError(invalid.errors(include_url=False)))
            return _error(400, details)
        operation = Chat(chat_request(body))
        call = await context.pipeline.run(
            Call(caller, body.model, operation, PATH, tag=header_tag(request.headers.get(TAG_HEADER)), end_user=body.end_user))
    except DomainError as error:
        status, detail, headers = error_status(error)
        return _error(status, detail, headers)
    headers = call_headers(call)
    render = MessageEvents(body.model).translate
    if call.stream is not None:
        return ChatStreamResponse(ChatStreamRelay(call, operation.body), headers=headers, render=render)
    if operation.streamed:  # answered from the cache
        return StreamingResponse(render(_replayed(call)), media_type="text/event-stream", headers=headers)
    assert call.answer is not None
    return FastJSONResponse(message(call.answer, body.model), headers=headers)


async def _replayed(call: Call) -> AsyncIterator[bytes]:
    async for block in replayed_stream(call, {}):
        yield block


ERROR_STATUSES = (400, 401, 402, 403, 404, 413, 429, 500, 502, 503, 504)


def add_messages_route(app: FastAPI) -> None:
    app.add_route(PATH, create_message, methods=["POST"], include_in_schema=False)

    async def messages(request: Request, body: MessagesRequest) -> Response:
        """Anthropic's Messages API on any chat model: `x-api-key` or `Authorization: Bearer`;
        the answer, its event stream (`stream: true`) and every error in Anthropic's shapes."""
        return await create_message(request)

    # Documents the route in the API reference, as routes/models.py does for the JSON model
    # routes: the plain route above matches first and serves every request.
    app.add_api_route(
        PATH, messages, methods=["POST"], tags=["anthropic"], summary="Create a message (Anthropic's Messages API)",
        response_model=None,
        responses={200: {"description": "A message, or its event stream (`text/event-stream`) when `stream` is true",
                         "content": {"application/json": {"schema": {"type": "object"}}, "text/event-stream": {}}},
                   **{status: {"model": ErrorResponse, "description": "An error, in Anthropic's shape"} for status in ERROR_STATUSES}},
    )

