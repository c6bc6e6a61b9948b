"""Responses of the model endpoints: a JSON answer encoded with orjson, a relayed stream."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from operator import methodcaller
from typing import Any

from starlette.responses import JSONResponse, StreamingResponse
from starlette.types import Receive, Scope, Send

from api.calls.streaming import ChatStreamRelay
from api.common import jsonutil


_latin1 = methodcaller("encode", "latin-1")  # as Starlette encodes header names and values


class FastJSONResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return jsonutil.dumps(content)

    def init_headers(self, headers: Mapping[str, str] | None = None) -> None:
        """Starlette's, with the headers encoded by maps (in C) rather than a Python loop: a
        model call's answer carries about ten (its limits, the overhead, the request id).
        `init_headers` is the hook Starlette's own responses (streaming, file) call from their
        constructors; the constructor has no other way to take headers than a str mapping."""
        names = list(map(_latin1, map(str.lower, headers))) if headers else []
        if b"content-length" in names or b"content-type" in names:
            super().init_headers(headers)
            return
        super().init_headers(None)  # its content-length and content-type
        if headers:
            self.raw_headers[:0] = zip(names, map(_latin1, headers.values()), strict=True)


class ChatStreamResponse(StreamingResponse):
    """A streaming response that always settles its relay, even if the client left before the
    first chunk (when the body iterator would never even start)."""

    def __init__(
        self, relay: ChatStreamRelay, headers: dict[str, str],
        render: Callable[[AsyncIterator[bytes]], AsyncIterator[bytes]] | None = None,
    ) -> None:
        """`render`: the OpenAI chunks in another protocol's stream (Anthropic's events)."""
        self.relay = relay
        body = self._body() if render is None else render(self._body())
        super().__init__(body, media_type="text/event-stream", headers={"Cache-Control": "no-cache", **headers})

    async def _body(self) -> AsyncIterator[bytes]:
        async for block in self.relay.events():
            yield block

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.relay.finish()
