"""The route class of the model endpoints that take a JSON body: documented by FastAPI from the
endpoint's signature like any route, but served by a handler of its own.

FastAPI's generic handler does a lot on every request that these endpoints never need: the
content type parsed with `email.message`, endpoint context for error messages, telemetry hooks,
per-request closures, then dependency solving. Measured with callgrind on a limited chat call,
this handler and the usage writer's changes of the same day cut a fifth of Tollgate's
instructions (docs/performance.md, 2026-12-01 evening). This one
reads the JSON body, validates it with the endpoint's model, authenticates the caller and
calls the endpoint with what FastAPI would have passed it, and fails the way FastAPI would:
the same statuses in the same order, 422 details shaped and located as FastAPI's.

It only serves endpoints whose parameters are one JSON body model, the caller and the app's
context; any other signature gets FastAPI's handler. FastAPI's `dependency_overrides` do not
reach the caller and context of the endpoints it serves.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from fastapi import APIRouter, params
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.middleware.exceptions import ExceptionMiddleware
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from api.common import jsonutil
from api.http.deps import get_context, get_principal

_EMPTY = object()  # no body at all

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def _is_json(content_type: str | None) -> bool:
    """FastAPI's test: application/json or application/*+json, parameters ignored."""
    if not content_type:
        return False
    media_type = content_type.split(";", 1)[0].strip().lower()
    maintype, _, subtype = media_type.partition("/")
    return maintype == "application" and (subtype == "json" or subtype.endswith("+json"))


def _body_errors(error: ValidationError) -> list[dict[str, Any]]:
    return [{**detail, "loc": ("body", *detail["loc"])} for detail in error.errors(include_url=False)]


class ModelRoute(APIRoute):
    lane: Handler | None = None  # the handler of its own, if it has one (ModelLane serves it)

    def get_route_handler(self) -> Handler:
        plan = self._plan()
        if plan is None:
            return super().get_route_handler()
        body_name, body_model, context_name, caller_name = plan
        endpoint = self.endpoint

        async def handler(request: Request) -> Response:
            # FastAPI's order: the body is parsed, then the caller authenticated (a dependency),
            # then the body validated.
            data = await _read_json(request)
            caller = await get_principal(request)
            body = _validate(body_model, data)
            return await endpoint(**{body_name: body, caller_name: caller, context_name: await get_context(request)})

        self.lane = handler
        return handler

    def _plan(self) -> tuple[str, type[BaseModel], str, str] | None:
        """(body parameter, its model, context parameter, caller parameter), if the endpoint
        takes exactly those."""
        dependant = self.dependant
        if dependant.path_params or dependant.query_params or dependant.header_params or dependant.cookie_params:
            return None
        if len(dependant.body_params) != 1 or self.body_field is None or isinstance(self.body_field.field_info, params.Form):
            return None
        body_model = self.body_field.field_info.annotation
        if not (isinstance(body_model, type) and issubclass(body_model, BaseModel)):
            return None
        names: dict[Any, str] = {}
        for dependency in dependant.dependencies:
            if dependency.call not in (get_context, get_principal) or dependency.name is None:
                return None
            names[dependency.call] = dependency.name
        if set(names) != {get_context, get_principal}:
            return None
        return dependant.body_params[0].name, body_model, names[get_context], names[get_principal]


async def _read_json(request: Request) -> Any:
    """The body as FastAPI gives it to validation: parsed if it is declared JSON, else bytes;
    `_EMPTY` when there is none. Invalid JSON is a 422 before anything else is checked."""
    raw = await request.body()
    if not raw:
        return _EMPTY
    if not _is_json(request.headers.get("content-type")):
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
        return model.model_validate(data, from_attributes=True)
    except ValidationError as error:
        raise RequestValidationError(_body_errors(error), body=data) from error


class ModelLane:
    """ASGI middleware, the innermost of the app's: a POST to an endpoint `ModelRoute` serves
    with a handler of its own goes straight to it, past FastAPI's router. The router would
    match the path against the routes, then wrap the call in two exit stacks and an exception
    wrapper of its own, on every request. Errors take the same way as through the router: an
    ExceptionMiddleware with the app's handlers, then the app's ServerErrorMiddleware for the
    rest. Only the exact path is served here: anything else (another method, a trailing slash,
    a `root_path`) goes to the router, which answers it as before.

    `router` must be included in the app without a prefix.
    """

    def __init__(self, app: ASGIApp, router: APIRouter, exception_handlers: Mapping[Any, Any]) -> None:
        self.app = app
        # Built when the app builds its middleware, on its first request: every handler is
        # registered by then. The 500s are left to ServerErrorMiddleware, as FastAPI does.
        handlers = {key: value for key, value in exception_handlers.items() if key not in (500, Exception)}
        self._lanes: dict[str, ASGIApp] = {}
        for route in router.routes:
            if isinstance(route, ModelRoute) and route.lane is not None and route.methods == {"POST"}:
                self._lanes[route.path] = ExceptionMiddleware(_asgi(route.lane), handlers=handlers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and not scope.get("root_path"):
            lane = self._lanes.get(scope["path"])
            if lane is not None:
                await lane(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _asgi(handler: Handler) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = await handler(Request(scope, receive, send))
        await response(scope, receive, send)

    return app
