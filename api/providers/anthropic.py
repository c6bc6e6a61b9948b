"""Anthropic's Messages API behind OpenAI's chat completions: the request, the answer, the
stream's events and the errors, translated both ways.

What maps: system messages (to `system`), multi-turn text, images (data URLs as base64
sources, others as URL sources), tools and tool choice, assistant tool calls (`tool_use`) and
tool results (`tool_result`, in the user turn that follows), `stop`, the completion bound
(`max_tokens`, which Anthropic requires: the gateway's default of 4096 when the call has none),
`temperature`, `top_p`, `user` (`metadata.user_id`). Usage: prompt tokens are the input tokens
with the cache's (written and read); `prompt_tokens_details.cached_tokens` the cache's reads.
"""

from __future__ import annotations

import json
import time
from typing import Any

from api.providers.base import Endpoint, ProviderAdapter, StreamTranslator, Upstream, completion_limit
from api.providers.turns import BlockStyle, chat_completion, fold, function_tools, tool_call, usage_with_cache

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096

STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
                "refusal": "content_filter", "pause_turn": "stop"}


def _image(url: str) -> dict[str, Any]:
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type = header[len("data:"):].split(";", 1)[0] or "image/png"
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _blocks(content: Any) -> list[dict[str, Any]]:
    """OpenAI message content (a string or parts) as Anthropic content blocks."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content or []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text" and isinstance(part.get("text"), str):
            blocks.append({"type": "text", "text": part["text"]})
        elif part.get("type") == "image_url":
            url = part.get("image_url")
            url = url.get("url") if isinstance(url, dict) else url
            if isinstance(url, str):
                blocks.append(_image(url))
    return blocks


_STYLE = BlockStyle(
    content=_blocks,
    tool_result=lambda call_id, text: {"type": "tool_result", "tool_use_id": call_id, "content": text},
    tool_use=lambda call_id, name, arguments: {"type": "tool_use", "id": call_id, "name": name, "input": arguments},
)


def messages_request(body: dict[str, Any], default_max_tokens: int = DEFAULT_MAX_TOKENS) -> dict[str, Any]:
    """An OpenAI chat completion request as a Messages API request."""
    folded = fold(body.get("messages"), _STYLE)
    system, turns = folded.system, folded.turns
    request: dict[str, Any] = {"model": body.get("model"), "messages": turns,
                               "max_tokens": completion_limit(body) or default_max_tokens}
    if system:
        request["system"] = "\n\n".join(system)
    stop = body.get("stop")
    if stop:
        request["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    for name in ("temperature", "top_p", "stream"):
        if body.get(name) is not None:
            request[name] = body[name]
    if isinstance(body.get("user"), str):
        request["metadata"] = {"user_id": body["user"]}
    tools = function_tools(body)
    if tools:
        request["tools"] = [{"name": f.get("name"), "description": f.get("description", ""),
                             "input_schema": f.get("parameters") or {"type": "object", "properties": {}}} for f in tools]
    choice = body.get("tool_choice")
    if choice == "required":
        request["tool_choice"] = {"type": "any"}
    elif choice in ("auto", "none"):
        request["tool_choice"] = {"type": choice}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        request["tool_choice"] = {"type": "tool", "name": choice["function"].get("name")}
    return request


def openai_usage(usage: dict[str, Any]) -> dict[str, Any]:
    return usage_with_cache(usage, ("input_tokens", "output_tokens", "cache_read_input_tokens", "cache_creation_input_tokens"))


def openai_completion(answer: dict[str, Any]) -> dict[str, Any]:
    """A Messages API answer as an OpenAI chat completion."""
    text: list[str] = []
    thinking: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in answer.get("content") or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            text.append(str(block.get("text", "")))
        elif block.get("type") == "thinking":
            thinking.append(str(block.get("thinking", "")))
        elif block.get("type") == "tool_use":
            calls.append(tool_call(block.get("id"), block.get("name"), block.get("input")))
    usage = openai_usage(answer["usage"]) if isinstance(answer.get("usage"), dict) else None
    return chat_completion(answer.get("id"), answer.get("model"), text, thinking, calls,
                           STOP_REASONS.get(str(answer.get("stop_reason")), "stop"), usage)


class MessagesStream:
    """Anthropic's stream events (`message_start`, `content_block_start`/`_delta`/`_stop`,
    `message_delta`, `message_stop`, `error`) as OpenAI chunks; the usage chunk (input tokens
    from `message_start`, output from `message_delta`) comes before `[DONE]`."""

    def __init__(self) -> None:
        self._pending = b""
        self._id = ""
        self._model = ""
        self._created = int(time.time())
        self._usage: dict[str, Any] = {}
        self._tools: dict[int, int] = {}  # content block index -> tool call index

    def feed(self, data: bytes) -> bytes:
        self._pending += data
        *lines, self._pending = self._pending.split(b"\n")
        out = bytearray()
        for line in lines:
            if line.startswith(b"data:"):
                try:
                    event = json.loads(line[5:].strip())
                except ValueError:
                    out += line + b"\n\n"  # the relay refuses it with a clear error
                    continue
                if isinstance(event, dict):
                    out += self._event(event)
        return bytes(out)

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk = {"id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self._model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    def _event(self, event: dict[str, Any]) -> bytes:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self._id, self._model = str(message.get("id", "")), str(message.get("model", ""))
            self._usage.update(message.get("usage") or {})
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use":
                index = self._tools.setdefault(int(event.get("index", 0)), len(self._tools))
                return self._chunk({"tool_calls": [{"index": index, "id": block.get("id"), "type": "function",
                                                    "function": {"name": block.get("name"), "arguments": ""}}]})
            return b""
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                return self._chunk({"content": delta.get("text", "")})
            if delta.get("type") == "thinking_delta":
                return self._chunk({"reasoning_content": delta.get("thinking", "")})
            if delta.get("type") == "input_json_delta":
                index = self._tools.get(int(event.get("index", 0)), 0)
                return self._chunk({"tool_calls": [{"index": index, "function": {"arguments": delta.get("partial_json", "")}}]})
            return b""
        if kind == "message_delta":
            self._usage.update(event.get("usage") or {})
            reason = (event.get("delta") or {}).get("stop_reason")
            return self._chunk({}, STOP_REASONS.get(str(reason), "stop")) if reason else b""
        if kind == "message_stop":
            usage = {"id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self._model,
                     "choices": [], "usage": openai_usage(self._usage)}
            return b"data: " + json.dumps(usage).encode() + b"\n\ndata: [DONE]\n\n"
        if kind == "error":
            return b"data: " + json.dumps({"error": event.get("error") or {"message": "error"}}).encode() + b"\n\n"
        return b""  # ping, content_block_stop


class AnthropicAdapter(ProviderAdapter):
    serves_completions = False

    def url(self, upstream: Upstream, endpoint: Endpoint, body: dict[str, Any] | None = None) -> str:
        if endpoint is Endpoint.chat:
            return upstream.url + "/v1/messages"
        return super().url(upstream, endpoint, body)

    def headers(self, key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if key:
            headers["x-api-key"] = key
        return headers

    def request_body(self, endpoint: Endpoint, body: dict[str, Any]) -> dict[str, Any]:
        return messages_request(body) if endpoint is Endpoint.chat else body

    def response_body(self, endpoint: Endpoint, body: Any) -> Any:
        if endpoint is Endpoint.chat and isinstance(body, dict) and body.get("type") == "message":
            return openai_completion(body)
        return body  # another shape: `well_formed` refuses it

    def error_body(self, status: int, body: Any) -> Any:
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            return {"error": {"message": error.get("message"), "type": error.get("type"), "code": status}}
        return body

    def stream_translator(self, body: dict[str, Any]) -> StreamTranslator | None:
        return MessagesStream()
