"""Gives every request an id: the client's `x-request-id` when it is a plausible one, else
Tollgate's own, echoed back in the response and carried by every log line of the request."""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.logs import enter_request, leave_request, new_request_id

REQUEST_ID_HEADER = b"x-request-id"
# What a client's id may look like: enough for UUIDs, trace ids and proxies' ids, and nothing
# that could forge a log line or a header.
_CLIENT_ID = re.compile(rb"^[A-Za-z0-9._:/=+-]{1,128}$")


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        own = new_request_id()
        given = next((value for name, value in scope["headers"] if name == REQUEST_ID_HEADER), None)
        correlation = given.decode() if given is not None and _CLIENT_ID.match(given) else own
        header = (REQUEST_ID_HEADER, correlation.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        token = enter_request(correlation, own)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            leave_request(token)
