"""AWS Bedrock's Converse and ConverseStream APIs behind OpenAI's chat completions.

Requests are signed with SigV4 by botocore: with the provider's key, `ACCESS_KEY_ID:SECRET`
(or `ACCESS_KEY_ID:SECRET:SESSION_TOKEN`), else with the standard AWS credential chain
(environment, shared files, container or instance role: resolved on first use, then refreshed
by botocore). The region is the provider's `region`, else the one in a
`bedrock-runtime.{region}.amazonaws.com` url. ConverseStream answers in AWS's binary
event-stream framing, read with botocore's parser.

What maps: system messages, turns, images as data URLs (Bedrock takes bytes, not URLs),
documents (OpenAI's `file` parts with a data URL, or the Bedrock connector's `doc` parts),
tools, tool choice, tool calls and results, `stop`, `max_tokens`, `temperature`, `top_p`, and
usage (cache reads and writes counted as prompt tokens).
"""

from __future__ import annotations

import base64
import json
import re
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import aiohttp

from api.errors import InvalidRequestError
from api.providers.base import (
    Endpoint, ProbeResult, ProviderAdapter, StreamTranslator, Upstream, UpstreamCheckError, WireRequest, completion_limit,
)
from api.providers.turns import BlockStyle, chat_completion, fold, function_tools, tool_call, usage_with_cache

if TYPE_CHECKING:
    from botocore.credentials import Credentials

# botocore is imported where a Bedrock call first needs it, not with this module: every worker
# imports the adapters, and botocore's session machinery alone holds 8 MB of every worker's
# memory, which only a gateway with a Bedrock provider should pay.

STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "tool_use": "tool_calls",
                "guardrail_intervened": "content_filter", "content_filtered": "content_filter"}
IMAGE_FORMATS = {"png", "jpeg", "gif", "webp"}
DOCUMENT_FORMATS = {"pdf", "csv", "doc", "docx", "xls", "xlsx", "html", "txt", "md"}
_REGION_IN_HOST = re.compile(r"^bedrock-runtime(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com")
_DOCUMENT_NAME = re.compile(r"[^A-Za-z0-9\s\-()\[\]]")


def region_of(upstream: Upstream) -> str | None:
    if upstream.region:
        return upstream.region
    match = _REGION_IN_HOST.match(urlsplit(upstream.url).hostname or "")
    return match.group(1) if match else None


def _data_url(url: str) -> tuple[str, str]:
    """(media subtype, base64 data) of a data URL."""
    header, _, data = url.partition(",")
    media_type = header[len("data:"):].split(";", 1)[0]
    return media_type.rsplit("/", 1)[-1].lower(), data


def _image(url: Any) -> dict[str, Any]:
    if not isinstance(url, str) or not url.startswith("data:"):
        raise InvalidRequestError("A bedrock model takes images as data URLs (data:image/png;base64,...)")
    subtype, data = _data_url(url)
    image_format = "jpeg" if subtype == "jpg" else subtype
    if image_format not in IMAGE_FORMATS:
        raise InvalidRequestError(f"A bedrock model takes png, jpeg, gif or webp images, not {subtype}")
    return {"image": {"format": image_format, "source": {"bytes": data}}}


def _document(name: Any, document_format: Any, data: str) -> dict[str, Any]:
    document_format = str(document_format or "").lower()
    if document_format not in DOCUMENT_FORMATS:
        raise InvalidRequestError(f"A bedrock model takes documents in {', '.join(sorted(DOCUMENT_FORMATS))}")
    clean = _DOCUMENT_NAME.sub(" ", str(name or "document").rsplit(".", 1)[0]).strip() or "document"
    return {"document": {"format": document_format, "name": clean[:200], "source": {"bytes": data}}}


def _doc_bytes(source: Any) -> str:
    """The Bedrock connector's `doc.source.bytes`: a list or an index-keyed object of byte
    values, or base64 already."""
    raw = source.get("bytes") if isinstance(source, dict) else None
    if isinstance(raw, str):
        return raw
    if isinstance(raw, dict):
        raw = [raw[k] for k in sorted(raw, key=lambda k: int(k))]
    if isinstance(raw, list) and all(isinstance(b, int) and 0 <= b < 256 for b in raw):
        return base64.b64encode(bytes(raw)).decode()
    raise InvalidRequestError("doc.source.bytes must be base64 or a list of byte values")


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content or []:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            blocks.append({"text": part["text"]})
        elif kind == "image_url":
            url = part.get("image_url")
            blocks.append(_image(url.get("url") if isinstance(url, dict) else url))
        elif kind == "file" and isinstance(part.get("file"), dict):
            data_url = part["file"].get("file_data")
            if not isinstance(data_url, str) or not data_url.startswith("data:"):
                raise InvalidRequestError("A bedrock model takes files as data URLs in file.file_data")
            subtype, data = _data_url(data_url)
            blocks.append(_document(part["file"].get("filename"), subtype, data))
        elif kind == "doc" and isinstance(part.get("doc"), dict):
            doc = part["doc"]
            blocks.append(_document(doc.get("name"), doc.get("format"), _doc_bytes(doc.get("source"))))
    return blocks


_STYLE = BlockStyle(
    content=_blocks,
    tool_result=lambda call_id, text: {"toolResult": {"toolUseId": call_id, "content": [{"text": text}]}},
    tool_use=lambda call_id, name, arguments: {"toolUse": {"toolUseId": call_id, "name": name, "input": arguments}},
)


def converse_request(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat completion request as a Converse request (the model is in the url)."""
    folded = fold(body.get("messages"), _STYLE)
    system, turns = [{"text": text} for text in folded.system], folded.turns
    request: dict[str, Any] = {"messages": turns}
    if system:
        request["system"] = system
    config: dict[str, Any] = {}
    limit = completion_limit(body)
    if limit is not None:
        config["maxTokens"] = limit
    for name, field in (("temperature", "temperature"), ("top_p", "topP")):
        if body.get(name) is not None:
            config[field] = body[name]
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    if config:
        request["inferenceConfig"] = config
    tools = function_tools(body)
    if tools:
        request["toolConfig"] = {"tools": [
            {"toolSpec": {"name": f.get("name"), "description": f.get("description") or f.get("name"),
                          "inputSchema": {"json": f.get("parameters") or {"type": "object", "properties": {}}}}}
            for f in tools]}
        choice = body.get("tool_choice")
        if choice == "required":
            request["toolConfig"]["toolChoice"] = {"any": {}}
        elif choice == "auto":
            request["toolConfig"]["toolChoice"] = {"auto": {}}
        elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
            request["toolConfig"]["toolChoice"] = {"tool": {"name": choice["function"].get("name")}}
    return request


def openai_usage(usage: dict[str, Any]) -> dict[str, Any]:
    return usage_with_cache(usage, ("inputTokens", "outputTokens", "cacheReadInputTokens", "cacheWriteInputTokens"))


def openai_completion(answer: dict[str, Any], model: str) -> dict[str, Any]:
    """A Converse answer as an OpenAI chat completion."""
    content = ((answer.get("output") or {}).get("message") or {}).get("content") or []
    text: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            text.append(block["text"])
        elif isinstance(block.get("toolUse"), dict):
            use = block["toolUse"]
            calls.append(tool_call(use.get("toolUseId"), use.get("name"), use.get("input")))
        elif isinstance(block.get("reasoningContent"), dict):
            reasoning.append(str((block["reasoningContent"].get("reasoningText") or {}).get("text", "")))
    usage = openai_usage(answer["usage"]) if isinstance(answer.get("usage"), dict) else None
    return chat_completion(f"chatcmpl-bedrock-{int(time.time() * 1000)}", model, text, reasoning, calls,
                           STOP_REASONS.get(str(answer.get("stopReason")), "stop"), usage)


class ConverseStream:
    """ConverseStream's event-stream messages (`messageStart`, `contentBlockStart`/`Delta`/`Stop`,
    `messageStop`, `metadata`, and exceptions) as OpenAI chunks; the usage (from `metadata`)
    and `[DONE]` come last."""

    def __init__(self, model: str) -> None:
        from botocore.eventstream import EventStreamBuffer

        self._buffer = EventStreamBuffer()
        self._model = model
        self._id = f"chatcmpl-bedrock-{int(time.time() * 1000)}"
        self._created = int(time.time())
        self._tools: dict[int, int] = {}  # content block index -> tool call index

    def feed(self, data: bytes) -> bytes:
        from botocore.eventstream import ParserError

        self._buffer.add_data(data)
        out = bytearray()
        try:
            for message in self._buffer:
                out += self._message(message.headers, message.payload)
        except ParserError as exc:  # a frame with a bad checksum or length
            out += self._error(f"the provider's event stream is corrupt ({exc.__class__.__name__})")
        return bytes(out)

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk = {"id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self._model,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    @staticmethod
    def _error(message: str) -> bytes:
        return b"data: " + json.dumps({"error": {"message": message}}).encode() + b"\n\n"

    def _message(self, headers: dict[str, Any], payload: bytes) -> bytes:
        try:
            event = json.loads(payload) if payload else {}
        except ValueError:
            return self._error("the provider sent an event that is not JSON")
        if headers.get(":message-type") != "event":
            kind = headers.get(":exception-type") or headers.get(":error-code") or "error"
            return self._error(f"{kind}: {event.get('message', '') if isinstance(event, dict) else ''}")
        kind = headers.get(":event-type")
        if kind == "messageStart":
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "contentBlockStart":
            use = (event.get("start") or {}).get("toolUse")
            if isinstance(use, dict):
                index = self._tools.setdefault(int(event.get("contentBlockIndex", 0)), len(self._tools))
                return self._chunk({"tool_calls": [{"index": index, "id": use.get("toolUseId"), "type": "function",
                                                    "function": {"name": use.get("name"), "arguments": ""}}]})
            return b""
        if kind == "contentBlockDelta":
            delta = event.get("delta") or {}
            if isinstance(delta.get("text"), str):
                return self._chunk({"content": delta["text"]})
            if isinstance(delta.get("toolUse"), dict):
                index = self._tools.get(int(event.get("contentBlockIndex", 0)), 0)
                return self._chunk({"tool_calls": [{"index": index, "function": {"arguments": delta["toolUse"].get("input", "")}}]})
            if isinstance(delta.get("reasoningContent"), dict):
                return self._chunk({"reasoning_content": delta["reasoningContent"].get("text", "")})
            return b""
        if kind == "messageStop":
            return self._chunk({}, STOP_REASONS.get(str(event.get("stopReason")), "stop"))
        if kind == "metadata":
            usage = {"id": self._id, "object": "chat.completion.chunk", "created": self._created, "model": self._model,
                     "choices": [], "usage": openai_usage(event.get("usage") or {})}
            return b"data: " + json.dumps(usage).encode() + b"\n\ndata: [DONE]\n\n"
        return b""


class BedrockAdapter(ProviderAdapter):
    serves_completions = False

    def __init__(self) -> None:
        super().__init__()
        self._chain: Credentials | None = None  # the AWS chain's, once resolved

    def url(self, upstream: Upstream, endpoint: Endpoint, body: dict[str, Any] | None = None) -> str:
        action = "converse-stream" if body and body.get("stream") else "converse"
        return f"{upstream.url}/model/{quote(upstream.model_name, safe='')}/{action}"

    def credentials(self, key: str | None) -> Credentials | None:
        from botocore.credentials import Credentials
        from botocore.session import Session

        if key:
            parts = key.split(":", 2)
            if len(parts) < 2:
                raise UpstreamCheckError("a bedrock key is ACCESS_KEY_ID:SECRET_ACCESS_KEY[:SESSION_TOKEN]")
            return Credentials(parts[0], parts[1], parts[2] if len(parts) == 3 else None)
        if self._chain is None:
            self._chain = Session().get_credentials()
        return self._chain

    def request(self, upstream: Upstream, endpoint: Endpoint, body: dict[str, Any]) -> WireRequest:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        url = self.url(upstream, endpoint, body)
        data = json.dumps(self.request_body(endpoint, body)).encode()
        signed = AWSRequest(method="POST", url=url, data=data, headers={"Content-Type": "application/json"})
        try:
            credentials = self.credentials(upstream.key)
        except UpstreamCheckError as exc:
            raise InvalidRequestError(f"The bedrock provider is misconfigured: {exc}") from exc
        if credentials is not None:
            SigV4Auth(credentials.get_frozen_credentials(), "bedrock", region_of(upstream) or "us-east-1").add_auth(signed)
        return WireRequest(url, data, dict(signed.headers.items()))

    def request_body(self, endpoint: Endpoint, body: dict[str, Any]) -> dict[str, Any]:
        return converse_request(body) if endpoint is Endpoint.chat else body

    def response_body(self, endpoint: Endpoint, body: Any) -> Any:
        if endpoint is Endpoint.chat and isinstance(body, dict) and isinstance(body.get("output"), dict):
            return openai_completion(body, str(body.get("model", "")))
        return body

    def error_body(self, status: int, body: Any) -> Any:
        message = body.get("message") or body.get("Message") if isinstance(body, dict) else None
        if isinstance(message, str):
            return {"error": {"message": message, "type": "bedrock_error", "code": status}}
        return body

    def stream_translator(self, body: dict[str, Any]) -> StreamTranslator | None:
        return ConverseStream(str(body.get("model", "")))

    async def probe(self, session: aiohttp.ClientSession, upstream: Upstream, model_type: str, timeout: float) -> ProbeResult:
        if region_of(upstream) is None:
            raise UpstreamCheckError("a bedrock provider needs its region (or a bedrock-runtime.{region}.amazonaws.com url)")
        if self.credentials(upstream.key) is None:
            raise UpstreamCheckError("no AWS credentials: give the provider a key or configure the AWS credential chain")
        body = {"model": upstream.model_name, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
        answer = await self._send(session, Endpoint.chat, self.request(upstream, Endpoint.chat, body),
                                  aiohttp.ClientTimeout(total=timeout))
        if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
            raise UpstreamCheckError("the provider's answer is not a Converse answer")
        return ProbeResult()
