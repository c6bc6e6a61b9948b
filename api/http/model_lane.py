"""The JSON model endpoints' requests take a middleware stack of their own, with fewer layers.

FastAPI wraps every request in its generic layers (native telemetry, its own body limit,
an AsyncExitStack for uploaded files) and matches it against every route. The model endpoints
carry the traffic and need none of that: in the measure of docs/performance.md (sixth
session) the layers cost ~7 µs of CPU per call. Their lane keeps what they do need, built
from the same pieces as the app's own stack, in the same order:

    ServerErrorMiddleware (the app's 500 handler) -> the app's own middleware (request id,
    body size) -> ExceptionMiddleware (the app's exception handlers) -> their routes

so a client sees the same answers, errors included. Only `POST` to one of their paths takes
the lane; anything else (another method, another path, the lifespan) goes through the app's
whole stack. With OpenTelemetry on, nothing takes the lane: FastAPI's telemetry sees every call.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.errors import ServerErrorMiddleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send


class TollgateAPI(FastAPI):
    """FastAPI, with `lane_routes` served through the shorter stack (`build_middleware_stack`
    is where Starlette builds an app's stack, on its first request)."""

    lane_routes: list[Route]

    def build_middleware_stack(self) -> ASGIApp:
        whole = super().build_middleware_stack()
        routes = getattr(self, "lane_routes", [])
        if not routes:
            return whole
        handlers = {key: handler for key, handler in self.exception_handlers.items() if key not in (500, Exception)}
        lane: ASGIApp = ExceptionMiddleware(_LaneRoutes(routes), handlers=handlers, debug=self.debug)
        for cls, args, kwargs in reversed(self.user_middleware):
            lane = cls(lane, *args, **kwargs)
        error_handler = self.exception_handlers.get(500) or self.exception_handlers.get(Exception)
        lane = ServerErrorMiddleware(lane, handler=error_handler, debug=self.debug)
        return _ByPath(whole, lane, frozenset(route.path for route in routes))


class _LaneRoutes:
    """The lane's routes by path: `_ByPath` sends only their paths, and only POSTs, which they
    all take, so no route needs matching (a Starlette Router tries each route's pattern)."""

    def __init__(self, routes: list[Route]) -> None:
        self._apps = {route.path: route.app for route in routes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._apps[scope["path"]](scope, receive, send)


class _ByPath:
    def __init__(self, whole: ASGIApp, lane: ASGIApp, paths: frozenset[str]) -> None:
        self.whole = whole
        self.lane = lane
        self.paths = paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in self.paths:
            await self.lane(scope, receive, send)
        else:
            await self.whole(scope, receive, send)
