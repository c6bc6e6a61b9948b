"""Anthropic's Messages API in front of the call pipeline: a `POST /v1/messages` request as an
OpenAI chat completion request, and its answer (whole, or chunk by chunk) as a Message or as
Anthropic's stream events; errors in Anthropic's shape.

What maps: `system` (a string or text blocks), turns of text, images (base64 or URL sources, as
data or plain URLs), `tool_use` blocks (assistant tool calls) and `tool_result` blocks (tool
messages), tools and `tool_choice`, `max_tokens`, `stop_sequences`, `temperature`, `top_p`,
`metadata.user_id` (the call's end user). Thinking blocks and `top_k` are not passed on.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from api.calls.schemas import ModelName, UpstreamRequest

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use",
                "content_filter": "refusal"}
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error", 403: "permission_error",
               404: "not_found_error", 413: "request_too_large", 415: "invalid_request_error", 422: "invalid_request_error",
               429: "rate_limit_error", 503: "overloaded_error"}


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class MessageParam(_Open):
    role: Literal["user", "assistant"]
    content: str | Annotated[list[dict[str, Any]], Field(max_length=10_000)]


class ToolParam(_Open):
    name: Annotated[str, Field(min_length=1, max_length=128)]
    description: str | None = None
    input_schema: dict[str, Any]


class ToolChoiceParam(_Open):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None


class MessagesRequest(UpstreamRequest):
    """A Messages API request: what Tollgate reads of it is validated, the rest ignored."""

    model: ModelName
    max_tokens: Annotated[int, Field(ge=1)]
    messages: Annotated[list[MessageParam], Field(min_length=1, max_length=10_000)]
    system: str | list[dict[str, Any]] | None = None
    stop_sequences: Annotated[list[str], Field(max_length=16)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    stream: bool = False
    tools: Annotated[list[ToolParam], Field(max_length=512)] | None = None
    tool_choice: ToolChoiceParam | None = None
    metadata: dict[str, Any] | None = None

    @property
    def end_user(self) -> str | None:
        user = (self.metadata or {}).get("user_id")
        return user[:255] if isinstance(user, str) else None


def _text(blocks: Any) -> str:
    if isinstance(blocks, str):
        return blocks
    return "".join(b.get("text", "") for b in blocks or [] if isinstance(b, dict) and b.get("type") == "text")


def _image_url(source: dict[str, Any]) -> str | None:
    if source.get("type") == "base64" and isinstance(source.get("data"), str):
        return f"data:{source.get('media_type', 'image/png')};base64,{source['data']}"
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return source["url"]
    return None


def chat_request(request: MessagesRequest) -> dict[str, Any]:
    """The OpenAI chat completion request a Messages request amounts to."""
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": _text(request.system)})
    for turn in request.messages:
        if isinstance(turn.content, str):
            messages.append({"role": turn.role, "content": turn.content})
            continue
        parts: list[dict[str, Any]] = []
        calls: list[dict[str, Any]] = []
        for block in turn.content:
            kind = block.get("type")
            if kind == "text" and isinstance(block.get("text"), str):
                parts.append({"type": "text", "text": block["text"]})
            elif kind == "image" and isinstance(block.get("source"), dict):
                url = _image_url(block["source"])
                if url is not None:
                    parts.append({"type": "image_url", "image_url": {"url": url}})
            elif kind == "tool_use":
                calls.append({"id": str(block.get("id", "")), "type": "function",
                              "function": {"name": str(block.get("name", "")), "arguments": json.dumps(block.get("input") or {})}})
            elif kind == "tool_result":
                messages.append({"role": "tool", "tool_call_id": str(block.get("tool_use_id", "")),
                                 "content": _text(block.get("content"))})
        if turn.role == "assistant":
            text = "".join(p["text"] for p in parts if p["type"] == "text")
            message: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                message["tool_calls"] = calls
            if text or calls:
                messages.append(message)
        elif parts:
            only_text = all(p["type"] == "text" for p in parts)
            messages.append({"role": "user", "content": "".join(p["text"] for p in parts) if only_text else parts})
    body: dict[str, Any] = {"model": request.model, "messages": messages, "max_tokens": request.max_tokens}
    if request.stream:
        body["stream"] = True
    if request.stop_sequences:
        body["stop"] = request.stop_sequences
    for name in ("temperature", "top_p"):
        if getattr(request, name) is not None:
            body[name] = getattr(request, name)
    if request.tools:
        body["tools"] = [{"type": "function", "function": {"name": t.name, "description": t.description or "",
                                                           "parameters": t.input_schema}} for t in request.tools]
    choice = request.tool_choice
    if choice is not None and request.tools:
        body["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}.get(
            choice.type, {"type": "function", "function": {"name": choice.name}})
    return body


def _input(arguments: Any) -> Any:
    try:
        value = json.loads(arguments) if isinstance(arguments, str) and arguments else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def message(answer: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI chat completion (Tollgate's `usage` in it) as a Message."""
    choice = (answer.get("choices") or [{}])[0]
    reply = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if isinstance(reply.get("content"), str) and reply["content"]:
        content.append({"type": "text", "text": reply["content"]})
    for call in reply.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id"), "name": function.get("name"),
                        "input": _input(function.get("arguments"))})
    usage = answer.get("usage") or {}
    return {"id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant", "model": model,
            "content": content, "stop_reason": STOP_REASONS.get(str(choice.get("finish_reason")), "end_turn"),
            "stop_sequence": None, "usage": _usage(usage)}


def _usage(usage: dict[str, Any]) -> dict[str, Any]:
    return {"input_tokens": usage.get("prompt_tokens", 0), "output_tokens": usage.get("completion_tokens", 0),
            "cost": usage.get("cost"), "carbon": usage.get("carbon")}


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorResponse(BaseModel):
    """Anthropic's error shape: every error of /v1/messages."""

    type: Literal["error"]
    error: ErrorDetail


def error_body(status: int, detail: Any) -> dict[str, Any]:
    kind = ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    text = detail if isinstance(detail, str) else json.dumps(detail, default=str)[:2000]
    return {"type": "error", "error": {"type": kind, "message": text}}


def _event(kind: str, payload: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: ".encode() + json.dumps({"type": kind, **payload}).encode() + b"\n\n"


class MessageEvents:
    """OpenAI chunks (the relay's SSE, usage chunk and [DONE] included) as Anthropic's stream:
    `message_start`, a content block per text run or tool call, `message_delta` with the stop
    reason and usage, `message_stop`; an error event as Anthropic's `error` event."""

    def __init__(self, model: str) -> None:
        self._model = model
        self._started = False
        self._block: int | None = None  # the open content block's index
        self._blocks = 0
        self._kind: str | None = None  # "text" or the tool call index
        self._stop_reason = "end_turn"
        self._usage: dict[str, Any] = {}

    async def translate(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        pending = b""
        async for data in chunks:
            pending += data
            *lines, pending = pending.split(b"\n")
            out = b"".join(self._line(line) for line in lines)
            if out:
                yield out
        if pending:
            out = self._line(pending)
            if out:
                yield out

    def _start(self) -> bytes:
        if self._started:
            return b""
        self._started = True
        return _event("message_start", {"message": {
            "id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant", "model": self._model,
            "content": [], "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}})

    def _close(self) -> bytes:
        if self._block is None:
            return b""
        index, self._block, self._kind = self._block, None, None
        return _event("content_block_stop", {"index": index})

    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close()
        self._block, self._kind = self._blocks, kind
        self._blocks += 1
        return out + _event("content_block_start", {"index": self._block, "content_block": block})

    def _line(self, line: bytes) -> bytes:
        if not line.startswith(b"data:"):
            return b""
        data = line[5:].strip()
        if data == b"[DONE]":
            return self._start() + self._close() + _event("message_delta", {
                "delta": {"stop_reason": self._stop_reason, "stop_sequence": None}, "usage": self._usage,
            }) + _event("message_stop", {})
        try:
            chunk = json.loads(data)
        except ValueError:
            return b""
        if not isinstance(chunk, dict):
            return b""
        if "error" in chunk and not chunk.get("choices"):
            error = chunk["error"] if isinstance(chunk["error"], dict) else {"message": str(chunk["error"])}
            return self._start() + _error_event(error)
        out = self._start()
        if isinstance(chunk.get("usage"), dict) and not chunk.get("choices"):
            self._usage = _usage(chunk["usage"])
        for choice in chunk.get("choices") or []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if isinstance(text, str) and text:
                if self._kind != "text":
                    out += self._open("text", {"type": "text", "text": ""})
                out += _event("content_block_delta", {"index": self._block, "delta": {"type": "text_delta", "text": text}})
            for call in delta.get("tool_calls") or []:
                if not isinstance(call, dict):
                    continue
                function = call.get("function") or {}
                kind = f"tool-{call.get('index', 0)}"
                if self._kind != kind:
                    out += self._open(kind, {"type": "tool_use", "id": call.get("id") or f"toolu_{uuid.uuid4().hex[:20]}",
                                             "name": function.get("name") or "", "input": {}})
                if function.get("arguments"):
                    out += _event("content_block_delta", {"index": self._block, "delta": {
                        "type": "input_json_delta", "partial_json": function["arguments"]}})
            if choice.get("finish_reason"):
                self._stop_reason = STOP_REASONS.get(str(choice["finish_reason"]), "end_turn")
        return out


def _error_event(error: dict[str, Any]) -> bytes:
    status = error.get("code") if isinstance(error.get("code"), int) else 502
    return b"event: error\ndata: " + json.dumps(error_body(status, str(error.get("message", "")))).encode() + b"\n\n"
