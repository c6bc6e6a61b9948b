"""Relaying a streamed chat completion: chunk by chunk, no buffering, accounted at the end.

The upstream is asked for usage (`stream_options.include_usage`); its usage chunk is replaced by
Tollgate's, which adds cost and carbon, just before `data: [DONE]`. If the upstream gives no usage,
tokens are counted from what was streamed. If the client goes away, the upstream call is
closed and the client is charged for what it was sent.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from api.inference.gateway import Gateway, OpenStream
from api.inference.tokens import count_messages, count_text
from api.usage.meter import Meter

CLIENT_CLOSED = 499  # nginx's convention for "the client closed the request"


class ChatStreamRelay:
    def __init__(
        self, gateway: Gateway, meter: Meter, stream: OpenStream, request_body: dict[str, Any],
        final_fields: dict[str, Any] | None = None,
    ) -> None:
        self._gateway = gateway
        self._final_fields = final_fields or {}  # added to the last chunk (search results)
        self._meter = meter
        self._stream = stream
        self._request_body = request_body
        self._text: list[str] = []
        self._upstream_usage: dict[str, Any] | None = None
        self._last_chunk: dict[str, Any] = {}
        self._finished = False
        self._status = CLIENT_CLOSED

    async def events(self) -> AsyncIterator[bytes]:
        pending = b""
        try:
            async for data in self._stream.response.content.iter_any():
                if self._meter.first_byte_at is None:
                    self._meter.first_byte_at = time.perf_counter()
                pending += data
                *lines, pending = pending.split(b"\n")
                out = bytearray()
                for line in lines:
                    forwarded = self._line(line)
                    if forwarded is not None:
                        out += forwarded + b"\n"
                if out:
                    yield bytes(out)
            if pending:
                forwarded = self._line(pending)
                if forwarded is not None:
                    yield forwarded + b"\n"
            if self._status == CLIENT_CLOSED:
                # The upstream ended without [DONE]: close the stream properly for the client.
                yield self._usage_event()
                yield b"data: [DONE]\n\n"
                self._status = 200
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._status = 502
            detail = f"the provider's stream broke off ({exc.__class__.__name__})"
            yield b"data: " + json.dumps({"error": {"message": detail, "type": "upstream_error", "code": 502}}).encode() + b"\n\n"

    def _line(self, line: bytes) -> bytes | None:
        """The line to forward (None to hold it back), noting content and usage on the way."""
        if not line.startswith(b"data:"):
            return line
        data = line[5:].strip()
        if data == b"[DONE]":
            self._status = 200
            return self._usage_event() + b"data: [DONE]"
        try:
            chunk = json.loads(data)
        except ValueError:
            return line  # not ours to judge: relay it as the provider sent it
        if not isinstance(chunk, dict):
            return line
        self._last_chunk = chunk
        choices = chunk.get("choices") or []
        for choice in choices:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict):
                for field in ("content", "reasoning_content"):
                    if isinstance(delta.get(field), str):
                        self._text.append(delta[field])
                for call in delta.get("tool_calls") or []:
                    arguments = (call.get("function") or {}).get("arguments") if isinstance(call, dict) else None
                    if isinstance(arguments, str):
                        self._text.append(arguments)
        if isinstance(chunk.get("usage"), dict):
            self._upstream_usage = chunk["usage"]
            if not choices:
                return None  # replaced by Tollgate's usage chunk
        return line

    def _tokens(self) -> tuple[int, int]:
        usage = self._upstream_usage or {}
        prompt = usage.get("prompt_tokens")
        completion = usage.get("completion_tokens")
        if not isinstance(prompt, int):
            prompt = count_messages(self._request_body.get("messages", []))
        if not isinstance(completion, int):
            completion = count_text("".join(self._text))
        return prompt, completion

    def _usage_event(self) -> bytes:
        prompt, completion = self._tokens()
        usage, _, _ = self._meter.usage(prompt, completion)
        chunk = {
            "id": self._last_chunk.get("id", f"chatcmpl-{self._meter.request_id}"),
            "object": "chat.completion.chunk",
            "created": self._last_chunk.get("created", int(time.time())),
            "model": self._last_chunk.get("model", self._meter.model),
            "choices": [],
            "usage": usage,
            **self._final_fields,
        }
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    async def finish(self) -> None:
        """Release the provider slot, close the upstream call, record usage. Runs exactly once,
        however the response ended (completed, broken, or abandoned by the client)."""
        if self._finished:
            return
        self._finished = True
        self._stream.response.close()
        await self._gateway.release(self._stream.lease)
        prompt, completion = self._tokens()
        _, cost, carbon = self._meter.usage(prompt, completion)
        await self._meter.record(self._status, prompt, completion, cost, carbon)


class MeteredStreamingResponse(StreamingResponse):
    """A streaming response that always settles its relay, even if the client left before the
    first chunk (when the body iterator would never even start)."""

    def __init__(self, relay: ChatStreamRelay, headers: dict[str, str]) -> None:
        self.relay = relay
        super().__init__(self._body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", **headers})

    async def _body(self) -> AsyncIterator[bytes]:
        async for block in self.relay.events():
            yield block

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.relay.finish()
