"""Relaying a streamed chat completion: chunk by chunk, no buffering, accounted at the end.

The upstream is asked for usage (`stream_options.include_usage`); its usage chunk is replaced by
Tollgate's, which adds cost and carbon, just before `data: [DONE]`. If the upstream gives no usage,
tokens are counted from what was streamed. If the client goes away, the upstream call is
closed and the client is charged for what it was sent.

What the provider sends is checked as it passes: a `data:` line that is not a JSON object, a
stream that breaks, ends before its last chunk, or grows larger than `max_response_bytes` (502),
one silent for longer than the provider's timeout or lasting longer than `max_stream_seconds`
(504) — each ends the client's stream with an `error` event of that code and is charged for
what was streamed until then (the headers are gone: no failover, no other status).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import aiohttp
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from api.calls.answers import OpenStream
from api.calls.gateway import Gateway
from api.calls.tokens import count_messages, count_text
from api.usage.meter import Meter

CLIENT_CLOSED = 499  # nginx's convention for "the client closed the request"


class StreamFault(Exception):
    """The provider's stream cannot be relayed any further: end it with an error event."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status  # recorded in the usage record and given as the event's `code`
        self.detail = detail


def error_event(status: int, detail: str) -> bytes:
    return b"data: " + json.dumps({"error": {"message": detail, "type": "upstream_error", "code": status}}).encode() + b"\n\n"


def _error_message(error: Any) -> str:
    message = error.get("message") if isinstance(error, dict) else error
    return str(message)[:500]


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
        self._finish_reason_seen = False
        self._finished = False
        self._status = CLIENT_CLOSED

    def _check_bounds(self, received: int) -> None:
        # Checked as each block arrives, before it is relayed: what was charged is what was sent.
        # A provider that goes quiet instead is caught by its read timeout.
        if received > self._stream.max_bytes:
            raise StreamFault(502, f"the provider's stream is larger than {self._stream.max_bytes} bytes")
        if time.monotonic() > self._stream.deadline:
            raise StreamFault(504, "the provider's stream lasted longer than the gateway allows")

    async def _blocks(self) -> AsyncIterator[bytes]:
        yield self._stream.first  # read by the gateway before it chose this provider
        async for data in self._stream.response.content.iter_any():
            yield data

    async def events(self) -> AsyncIterator[bytes]:
        pending = b""
        received = 0
        try:
            async with aclosing(self._blocks()) as blocks:
                async for data in blocks:
                    received += len(data)
                    self._check_bounds(received)
                    pending += data
                    *lines, pending = pending.split(b"\n")
                    out, fault = self._relay(lines)
                    if self._status == 200:
                        await self._record()  # before [DONE] leaves
                    if out:
                        yield out
                    if fault is not None:
                        raise fault
                    if self._status == 200:
                        break  # [DONE] went out: whatever the provider does next is not relayed
            if pending:
                out, fault = self._relay([pending])
                if self._status == 200:
                    await self._record()
                if out:
                    yield out
                if fault is not None:
                    raise fault
            if self._status == CLIENT_CLOSED:
                if not self._finish_reason_seen:
                    raise StreamFault(502, "the provider's stream ended before its last chunk")
                # Complete, but the upstream ended without [DONE]: close it properly for the client.
                self._status = 200
                await self._record()
                yield self._usage_event() + b"data: [DONE]\n\n"
        except TimeoutError:  # aiohttp's read timeout is one too: the provider went quiet
            yield await self._fail(504, "the provider's stream went quiet for longer than its timeout")
        except aiohttp.ClientError as exc:
            yield await self._fail(502, f"the provider's stream broke off ({exc.__class__.__name__})")
        except StreamFault as fault:
            yield await self._fail(fault.status, fault.detail)

    async def _fail(self, status: int, detail: str) -> bytes:
        """The error event that ends the stream, recorded before it leaves."""
        self._status = status
        await self._record()
        return error_event(status, detail)

    async def _record(self) -> None:
        """Record the call (journaled and queued, see UsageWriter.record) before the stream's
        last bytes leave, so that a process killed once it has answered still accounts for it.
        A stream that never gets that far is recorded by `finish`, for what was sent."""
        prompt, completion = self._tokens()
        _, cost, carbon = self._meter.usage(prompt, completion)
        await self._meter.record(self._status, prompt, completion, cost, carbon)

    def _relay(self, lines: list[bytes]) -> tuple[bytes, StreamFault | None]:
        """What to forward of these lines, and the fault that stopped them, if any: the lines
        before a bad one still go out (they are counted, so they must be sent)."""
        out = bytearray()
        for line in lines:
            try:
                forwarded = self._line(line)
            except StreamFault as fault:
                return bytes(out), fault
            if forwarded is not None:
                out += forwarded + b"\n"
        return bytes(out), None

    def _line(self, line: bytes) -> bytes | None:
        """The line to forward (None to hold it back), noting content and usage on the way."""
        if self._status == 200:
            return None  # after [DONE]
        if not line.startswith(b"data:"):
            return line
        data = line[5:].strip()
        if data == b"[DONE]":
            self._status = 200
            return self._usage_event() + b"data: [DONE]\n"  # with its blank line: what follows is dropped
        try:
            chunk = json.loads(data)
        except ValueError:
            chunk = None
        if not isinstance(chunk, dict):
            # A client's SDK would fail on it in its own way; one clear error event is better.
            raise StreamFault(502, "the provider sent an event that is not a JSON object")
        if "error" in chunk and not chunk.get("choices"):
            # The provider's own error event (OpenAI, vLLM): the stream failed, whatever follows.
            raise StreamFault(502, f"the provider reported an error: {_error_message(chunk['error'])}")
        self._last_chunk = chunk
        choices = chunk.get("choices") or []
        for choice in choices:
            if isinstance(choice, dict) and choice.get("finish_reason"):
                self._finish_reason_seen = True
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
        """Close the upstream call, record usage, release the provider slot. Runs exactly once,
        however the response ended (completed, broken, or abandoned by the client)."""
        if self._finished:
            return
        self._finished = True
        self._stream.response.close()
        try:
            await self._record()  # no-op if the end of the stream was recorded already
            await self._meter.settle()
        finally:
            await self._gateway.release(self._stream.lease)


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
