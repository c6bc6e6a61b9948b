"""The JSON model endpoints (chat, completions, embeddings, rerank) served by plain Starlette routes.

FastAPI documents these endpoints from their functions in `routes/models.py`; here each is
served by a route of its own that reads the body, authenticates the caller, validates the body
and calls that same function with what it declares. FastAPI's generic handling solves each
dependency on every request (a fifth to a third of a chat call's CPU here: docs/performance.md,
2026-12-05); these endpoints carry the traffic and need none of it.

Clients see what FastAPI would answer, in its order: invalid JSON is a 422 even without a key,
then the key is checked (401), then the body validated (422, with FastAPI's `loc` and fields).
FastAPI's `dependency_overrides` do not reach these three endpoints.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from api.calls.schemas import ChatCompletionRequest, CompletionRequest, EmbeddingsRequest, RerankRequest
from api.common import jsonutil
from api.http.context import AppContext
from api.http.model_lane import TollgateAPI
from api.http.routes import models
from api.identity.principal import Principal
from api.usage.tags import TAG_HEADER

_EMPTY = object()  # no body at all
_TAG_HEADER = TAG_HEADER.lower().encode()  # as ASGI gives header names


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")  # as Starlette decodes header values

# An endpoint's function called with its validated body, the caller, the app's context and
# the X-Tollgate-Tag header (checked by the function).
Call = Callable[[Any, Principal, AppContext, str | None], Awaitable[Response]]


def _is_json(content_type: str | None) -> bool:
    """FastAPI's test: application/json or application/*+json, parameters ignored."""
    if not content_type:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    maintype, _, subtype = media_type.partition("/")
    return maintype == "application" and (subtype == "json" or subtype.endswith("+json"))


async def _read_json(request: Request, content_type: str | None) -> Any:
    """The body as FastAPI gives it to validation: parsed if it is declared JSON, else bytes;
    `_EMPTY` when there is none. Invalid JSON is a 422 before anything else is checked."""
    raw = await request.body()
    if not raw:
        return _EMPTY
    if not _is_json(content_type):
        return raw
    try:
        return jsonutil.loads(raw)
    except json.JSONDecodeError as error:
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body", error.pos), "msg": "JSON decode error", "input": {},
              "ctx": {"error": error.msg}}],
            body=error.doc,
        ) from error
    except ValueError as error:  # not UTF-8
        raise HTTPException(status_code=400, detail="There was an error parsing the body") from error


def _validate(model: type[BaseModel], data: Any) -> BaseModel:
    if data is _EMPTY:
        raise RequestValidationError([{"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}])
    try:
        return model.model_validate(data, from_attributes=True)  # as FastAPI validates a body
    except ValidationError as error:
        errors = [{**detail, "loc": ("body", *detail["loc"])} for detail in error.errors(include_url=False)]
        raise RequestValidationError(errors, body=data) from error


class _ModelEndpoint:
    """A route's endpoint as a plain ASGI app (Starlette serves a class instance as one): a
    function endpoint would be wrapped in Starlette's `request_response`, whose exception
    handling repeats what the ExceptionMiddleware around every route already does, on every call."""

    def __init__(self, model: type[BaseModel], call: Call) -> None:
        self._model = model
        self._call = call

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        context: AppContext = request.app.state.context
        # The three headers read in one pass over them, in C (each `request.headers.get` is a
        # Python loop over all of them); the first of a repeated name, as Starlette's gives.
        headers = dict(reversed(scope["headers"]))
        data = await _read_json(request, _text(headers.get(b"content-type")))
        caller = await context.authenticator.authenticate(_text(headers.get(b"authorization")))
        response = await self._call(_validate(self._model, data), caller, context, _text(headers.get(_TAG_HEADER)))
        await response(scope, receive, send)


ROUTES: dict[str, tuple[type[BaseModel], Call]] = {
    "/v1/chat/completions": (
        ChatCompletionRequest,
        lambda body, caller, context, tag: models.chat_completions(
            body, caller, context.pipeline, context.searcher, context.settings, tag
        ),
    ),
    "/v1/completions": (
        CompletionRequest, lambda body, caller, context, tag: models.completions(body, caller, context.pipeline, tag)
    ),
    "/v1/embeddings": (
        EmbeddingsRequest, lambda body, caller, context, tag: models.create_embeddings(body, caller, context.pipeline, tag)
    ),
    "/v1/rerank": (RerankRequest, lambda body, caller, context, tag: models.create_rerank(body, caller, context.pipeline, tag)),
}


def add_json_model_routes(app: TollgateAPI, lane: bool) -> None:
    """Before `routes/models.py`'s routes, which then only document these: the first
    route that matches a request serves it. `lane`: their POSTs also take the app's shorter
    middleware stack (api/http/model_lane.py)."""
    routes = [Route(path, _ModelEndpoint(model, call), methods=["POST"], include_in_schema=False)
              for path, (model, call) in ROUTES.items()]
    app.router.routes.extend(routes)
    app.lane_routes = routes if lane else []
