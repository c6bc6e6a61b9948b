"""Relaying a streamed chat completion: chunk by chunk, no buffering, accounted at the end.

The upstream is asked for usage (`stream_options.include_usage`); its usage chunk is replaced by
Tollgate's, which adds cost and carbon, just before `data: [DONE]`. If the upstream gives no usage,
tokens are counted from what was streamed (the prompt as a chat template would lay it out,
`tokens.count_chat_prompt`, unless the provider can count it: `ProviderAdapter.count_prompt`).
If the client goes away, the upstream call is closed and the client is charged for what it was
sent.

A stream holds to the completion bound it was sent (and reserved for): a provider that ignores
it is cut once it sends more content chunks than the bound (each carries at least one token),
and the client's stream ends there with `finish_reason: "length"`. A stream that ends with
`[DONE]` but no `finish_reason` was cut upstream (llama.cpp does so when interrupted): it is
incomplete, ended with an error event and recorded as such (502).

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

from api.calls.call import CLIENT_CLOSED, Call
from api.errors import StreamFault
from api.calls.tokens import count_chat_prompt, count_inputs, count_text
from api.providers.base import completion_limit


def error_event(status: int, detail: str) -> bytes:
    return b"data: " + json.dumps({"error": {"message": detail, "type": "upstream_error", "code": status}}).encode() + b"\n\n"


def _error_message(error: Any) -> str:
    message = error.get("message") if isinstance(error, dict) else error
    return str(message)[:500]


class ChatStreamRelay:
    def __init__(self, call: Call, request_body: dict[str, Any], final_fields: dict[str, Any] | None = None) -> None:
        assert call.stream is not None
        self._final_fields = final_fields or {}  # added to the last chunk (search results)
        self._call = call
        self._stream = call.stream
        self._request_body = request_body
        self._text: list[str] = []
        # What is kept of it (conversation records; the cache, if it was one choice of plain text).
        self._content: list[str] = []
        self._reasoning: list[str] = []
        self._plain = True
        self._finish_reason: str | None = None
        self._upstream_usage: dict[str, Any] | None = None
        self._last_chunk: dict[str, Any] = {}
        self._finish_reason_seen = False
        self._ended = False
        self._status = CLIENT_CLOSED
        limit = completion_limit(request_body)
        self._bound = None if limit is None else limit * (request_body.get("n") or 1)
        self._content_chunks = 0  # chunks that carried generated text: at least a token each

    def _check_bounds(self, received: int) -> None:
        # Checked as each block arrives, before it is relayed: what was charged is what was sent.
        # A provider that goes quiet instead is caught by its read timeout.
        if received > self._stream.max_bytes:
            raise StreamFault(502, f"the provider's stream is larger than {self._stream.max_bytes} bytes")
        if time.monotonic() > self._stream.deadline:
            raise StreamFault(504, "the provider's stream lasted longer than the gateway allows")

    async def _blocks(self) -> AsyncIterator[bytes]:
        yield self._stream.first  # read by the gateway before it chose this provider
        translator = self._stream.translator
        async for data in self._stream.response.content.iter_any():
            yield translator.feed(data) if translator is not None else data

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
                        out += await self._end_with_done()
                    if out:
                        yield out
                    if fault is not None:
                        raise fault
                    if self._status == 200:
                        break  # [DONE] went out: whatever the provider does next is not relayed
            if pending:
                out, fault = self._relay([pending])
                if self._status == 200:
                    out += await self._end_with_done()
                if out:
                    yield out
                if fault is not None:
                    raise fault
            if self._status == CLIENT_CLOSED:
                if not self._finish_reason_seen:
                    raise StreamFault(502, "the provider's stream ended before its last chunk")
                # Complete, but the upstream ended without [DONE]: close it properly for the client.
                self._status = 200
                yield await self._end_with_done()
        except TimeoutError:  # aiohttp's read timeout is one too: the provider went quiet
            yield await self._fail(504, "the provider's stream went quiet for longer than its timeout")
        except aiohttp.ClientError as exc:
            yield await self._fail(502, f"the provider's stream broke off ({exc.__class__.__name__})")
        except StreamFault as fault:
            yield await self._fail(fault.status, fault.detail)

    async def _fail(self, status: int, detail: str) -> bytes:
        """The error event that ends the stream, recorded before it leaves."""
        self._status = status
        await self._end()
        return error_event(status, detail)

    async def _end(self) -> None:
        """End the call (settled, recorded: the pipeline's steps leave) before the stream's last
        bytes leave, so that a process killed once it has answered still accounts for it. A
        stream that never gets that far is ended by `finish`, for what was sent."""
        if self._ended:
            return
        self._ended = True
        self._call.tokens(*await self._tokens())
        self._call.status = self._status
        if self._status == 200:
            message = {"role": "assistant", "content": "".join(self._content)}
            if self._reasoning:
                message["reasoning_content"] = "".join(self._reasoning)
            self._call.streamed_answer = {
                "id": self._last_chunk.get("id", f"chatcmpl-{self._call.request_id}"), "object": "chat.completion",
                "created": self._last_chunk.get("created", int(time.time())), "model": self._last_chunk.get("model"),
                "choices": [{"index": 0, "message": message, "finish_reason": self._finish_reason}],
            }
            self._call.streamed_plain = self._plain
        assert self._call.finish is not None
        await self._call.finish()

    async def _end_with_done(self) -> bytes:
        """The call ended, then its usage chunk and [DONE]: the client's last bytes."""
        await self._end()
        return self._usage_event() + b"data: [DONE]\n\n"

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
            if not self._finish_reason_seen:
                raise StreamFault(502, "the provider's stream ended without a finish reason (cut upstream)")
            self._status = 200  # the usage chunk and [DONE] follow; whatever comes after is dropped
            return None
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
        if self._bound is not None and _generates(choices):
            if self._content_chunks >= self._bound:
                return self._cut_at_bound(chunk)
            self._content_chunks += 1
        for choice in choices:
            if isinstance(choice, dict) and choice.get("finish_reason"):
                self._finish_reason_seen = True
                self._finish_reason = str(choice["finish_reason"])
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                self._plain = False
            if isinstance(choice, dict) and isinstance(choice.get("text"), str):  # a legacy completion's chunk
                self._text.append(choice["text"])
                self._content.append(choice["text"])
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if isinstance(delta, dict):
                for field in ("content", "reasoning_content"):
                    if isinstance(delta.get(field), str):
                        self._text.append(delta[field])
                if isinstance(delta.get("content"), str):
                    self._content.append(delta["content"])
                if isinstance(delta.get("reasoning_content"), str):
                    self._reasoning.append(delta["reasoning_content"])
                if delta.get("tool_calls"):
                    self._plain = False
                for call in delta.get("tool_calls") or []:
                    arguments = (call.get("function") or {}).get("arguments") if isinstance(call, dict) else None
                    if isinstance(arguments, str):
                        self._text.append(arguments)
        if isinstance(chunk.get("usage"), dict):
            self._upstream_usage = chunk["usage"]
            if not choices:
                return None  # replaced by Tollgate's usage chunk
        return line

    def _cut_at_bound(self, chunk: dict[str, Any]) -> bytes:
        """The provider went past the bound it was sent: what it sends from here is neither
        relayed nor charged. The client's stream ends as a provider's would at its bound."""
        self._finish_reason_seen = True
        self._finish_reason = "length"
        self._upstream_usage = None  # whatever it reports later is not read
        self._status = 200
        # `delta` for a chat chunk, `text` for a legacy completion's: each reads its own.
        last = {"id": chunk.get("id"), "object": chunk.get("object", "chat.completion.chunk"), "created": chunk.get("created"),
                "model": chunk.get("model"), "choices": [{"index": 0, "delta": {}, "text": "", "finish_reason": "length"}]}
        return b"data: " + json.dumps(last).encode() + b"\n"

    async def _tokens(self) -> tuple[int, int]:
        usage = self._upstream_usage or {}
        prompt = usage.get("prompt_tokens")
        completion = usage.get("completion_tokens")
        if not isinstance(prompt, int):
            prompt = await self._count_prompt()
        if not isinstance(completion, int):
            completion = count_text("".join(self._text))
        if self._bound is not None:
            completion = min(completion, self._bound)
        return prompt, completion

    async def _count_prompt(self) -> int:
        """The provider's own count of the prompt where it can say (vLLM's /tokenize), else
        Tollgate's estimate with the chat template's tokens."""
        if "prompt" in self._request_body:  # a legacy completion: its prompt is sent as it is
            return count_inputs(self._request_body["prompt"])
        messages = self._request_body.get("messages", [])
        provider = self._stream.provider
        counted = await self._stream.adapter.count_prompt(self._stream.session, provider.upstream, messages,
                                                                min(provider.timeout, 5))
        return counted if counted is not None else count_chat_prompt(messages)

    def _usage_event(self) -> bytes:
        chunk = {
            "id": self._last_chunk.get("id", f"chatcmpl-{self._call.request_id}"),
            "object": self._last_chunk.get("object", "chat.completion.chunk"),
            "created": self._last_chunk.get("created", int(time.time())),
            "model": self._last_chunk.get("model", self._call.model),
            "choices": [],
            "usage": self._call.usage,
            **self._final_fields,
        }
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    async def finish(self) -> None:
        """Close the upstream call and end the call (which releases the provider slot), however
        the response ended: completed, broken, or abandoned by the client."""
        self._stream.response.close()
        await self._end()  # nothing to do if the end of the stream ended it already


def _generates(choices: list[Any]) -> bool:
    """Whether a chunk's choices carry generated text or tool call arguments."""
    for choice in choices:
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict) and (delta.get("content") or delta.get("reasoning_content") or delta.get("tool_calls")):
            return True
        if isinstance(choice, dict) and choice.get("text"):
            return True
    return False
