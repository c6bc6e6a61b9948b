"""ASGI middleware refusing request bodies over the configured size with 413, and NUL in URLs.

A declared Content-Length over the limit is refused before the app runs. A body without one
(chunked) is counted as the app reads it; once over the limit, whatever the app answers or
raises is replaced by the 413.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

# A path's own error shape (Anthropic's for /v1/messages), from the status and the message.
ErrorShape = Callable[[int, str], dict[str, Any]]


class BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, upload_paths: tuple[str, ...] = (), max_upload_bytes: int = 0,
                 error_shapes: dict[str, ErrorShape] | None = None) -> None:
        self.app = app
        self.error_shapes = error_shapes or {}
        self.default_max_bytes = max_bytes
        # File uploads get their own bound (the file, plus room for the form around it).
        self.upload_paths = upload_paths
        self.upload_max_bytes = max(max_bytes, max_upload_bytes + 1024 * 1024)

    def _limit(self, scope: Scope) -> int:
        if self.upload_paths and scope.get("path", "") in self.upload_paths:
            return self.upload_max_bytes
        return self.default_max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope.get("path", "") or b"%00" in scope.get("query_string", b""):
            # PostgreSQL cannot store NUL, and no legitimate id or filter contains one.
            await self._send(scope, send, 400, "NUL characters are not allowed in URLs")
            return
        max_bytes = self._limit(scope)
        declared: int | None = None
        chunked = False
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit():
                declared = int(value)
            elif name == b"transfer-encoding":
                chunked = True
        if declared is not None and declared > max_bytes:
            await self._send_413(scope, send, max_bytes)
            return
        if declared is not None and not chunked:
            # The server delivers no more than a declared length: nothing left to count.
            await self.app(scope, receive, send)
            return

        received = 0
        too_large = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    too_large = True
                    raise BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if too_large:
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self._send_413(scope, send, max_bytes)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not too_large:
                raise
            if not started:
                await self._send_413(scope, send, max_bytes)

    async def _send_413(self, scope: Scope, send: Send, max_bytes: int) -> None:
        await self._send(scope, send, 413, f"Request body is larger than {max_bytes} bytes")

    async def _send(self, scope: Scope, send: Send, status: int, detail: str) -> None:
        shape = self.error_shapes.get(scope.get("path", ""))
        body = json.dumps(shape(status, detail) if shape else {"detail": detail}, separators=(",", ":")).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
