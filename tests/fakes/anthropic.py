"""A fake Anthropic: the Messages API (`POST /v1/messages`, streamed as its SSE events) and its
model list, over real HTTP, with the faults of `Behaviour` (statuses, delays) in Anthropic's
error shape. Requests are logged in `received`, like the OpenAI-compatible fake's."""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from typing import Any

from aiohttp import web

from fakes.upstream import Behaviour, FakeUpstream, Received, count_tokens

CLAUDE_MODEL = "claude-fake"


def anthropic_error(status: int, kind: str, message: str) -> web.Response:
    return web.json_response({"type": "error", "error": {"type": kind, "message": message}}, status=status)


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return " ".join(b.get("text", "") for b in content or [] if isinstance(b, dict) and b.get("type") == "text")


class FakeAnthropic(FakeUpstream):
    def __init__(self, behaviour: Behaviour | None = None, api_key: str = "sk-ant-fake") -> None:
        super().__init__(models=[CLAUDE_MODEL], api_key=api_key, behaviour=behaviour or Behaviour())

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/v1/models", self._anthropic_models)
        app.router.add_post("/v1/messages", self._messages)
        return app

    def _refused(self, request: web.Request) -> web.Response | None:
        if request.headers.get("x-api-key") != self.api_key:
            return anthropic_error(401, "authentication_error", "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return anthropic_error(400, "invalid_request_error", "anthropic-version header is required")
        return None

    async def _anthropic_models(self, request: web.Request) -> web.StreamResponse:
        refused = self._refused(request)
        if refused is not None:
            return refused
        return web.json_response({"data": [{"type": "model", "id": m, "display_name": m} for m in self.models],
                                  "has_more": False, "first_id": self.models[0], "last_id": self.models[-1]})

    def _reply(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
        """The content blocks of the answer and its stop reason."""
        messages = body.get("messages") or []
        last = messages[-1].get("content") if messages else ""
        blocks = last if isinstance(last, list) else []
        results = [b for b in blocks if isinstance(b, dict) and b.get("type") == "tool_result"]
        if results:
            return [{"type": "text", "text": f"the tool said {results[0].get('content')}"}], "end_turn"
        if body.get("tools") and (body.get("tool_choice") or {}).get("type") != "none":
            tool = body["tools"][0]["name"]
            return [{"type": "tool_use", "id": "toolu_01", "name": tool, "input": {"city": "Paris"}}], "tool_use"
        images = [b for m in messages if isinstance(m.get("content"), list) for b in m["content"]
                  if isinstance(b, dict) and b.get("type") == "image"]
        if images:
            source = images[0]["source"]
            seen = source.get("data") or source.get("url") or ""
            return [{"type": "text", "text": f"read image {source.get('media_type', 'url')} {hashlib.sha256(seen.encode()).hexdigest()[:12]}"}], "end_turn"
        words = [f"word{i}" for i in range(self.behaviour.reply_words)]
        limit = body["max_tokens"]
        stop = "end_turn"
        if len(words) > limit:
            words, stop = words[:limit], "max_tokens"
        for sequence in body.get("stop_sequences") or []:
            if sequence in words:
                words, stop = words[:words.index(sequence)], "stop_sequence"
        return [{"type": "text", "text": " ".join(words)}], stop

    def _usage(self, body: dict[str, Any], output: int) -> dict[str, int]:
        system = body.get("system") or ""
        cached = count_tokens(_text(system))  # the system prompt is "read from the cache"
        prompt = sum(count_tokens(_text(m.get("content"))) for m in body.get("messages") or [])
        return {"input_tokens": prompt, "output_tokens": output, "cache_read_input_tokens": cached,
                "cache_creation_input_tokens": 0}

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if self.log_requests:
            self.received.append(Received(request.path, body, dict(request.headers)))
        refused = self._refused(request)
        if refused is not None:
            return refused
        if self.behaviour.delay_seconds:
            await asyncio.sleep(self.behaviour.delay_seconds)
        status = self._consume_failure()
        if status is not None:
            kind = {429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error" if status >= 500 else "invalid_request_error")
            response = anthropic_error(status, kind, f"injected failure {status}")
            if self.behaviour.retry_after:
                response.headers["retry-after"] = self.behaviour.retry_after
            return response
        if not isinstance(body.get("max_tokens"), int):
            return anthropic_error(400, "invalid_request_error", "max_tokens: Field required")
        if body.get("model") not in self.models:
            return anthropic_error(404, "not_found_error", f"model: {body.get('model')}")
        if any(m.get("role") not in ("user", "assistant") for m in body.get("messages") or []):
            return anthropic_error(400, "invalid_request_error", "messages: roles must be user or assistant")
        blocks, stop = self._reply(body)
        output = sum(count_tokens(b.get("text", "")) for b in blocks) + sum(3 for b in blocks if b["type"] == "tool_use")
        message = {"id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant", "model": body["model"],
                   "content": blocks, "stop_reason": stop, "stop_sequence": None, "usage": self._usage(body, output)}
        if body.get("stream"):
            return await self._stream(request, message)
        return web.json_response(message)

    async def _stream(self, request: web.Request, message: dict[str, Any]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)

        async def event(kind: str, payload: dict[str, Any]) -> None:
            await response.write(f"event: {kind}\ndata: {json.dumps({'type': kind, **payload})}\n\n".encode())
            if self.behaviour.chunk_delay_seconds:
                await asyncio.sleep(self.behaviour.chunk_delay_seconds)

        usage = message["usage"]
        start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
        await event("message_start", {"message": start})
        await event("ping", {})
        for index, block in enumerate(message["content"]):
            if block["type"] == "text":
                await event("content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}})
                words = block["text"].split(" ")
                for position, word in enumerate(words):
                    if self.behaviour.drop_after_chunks is not None and position >= self.behaviour.drop_after_chunks:
                        assert request.transport is not None
                        request.transport.close()
                        return response
                    text = word if position == 0 else " " + word
                    await event("content_block_delta", {"index": index, "delta": {"type": "text_delta", "text": text}})
            else:
                await event("content_block_start", {"index": index, "content_block": {**block, "input": {}}})
                raw = json.dumps(block["input"])
                for part in (raw[: len(raw) // 2], raw[len(raw) // 2:]):
                    await event("content_block_delta", {"index": index, "delta": {"type": "input_json_delta", "partial_json": part}})
            await event("content_block_stop", {"index": index})
        await event("message_delta", {"delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                                      "usage": {"output_tokens": usage["output_tokens"]}})
        await event("message_stop", {})
        await response.write_eof()
        return response


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="fake Anthropic Messages API")
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--api-key", default="sk-ant-fake")
    args = parser.parse_args()
    fake = FakeAnthropic(api_key=args.api_key)
    fake.log_requests = False
    web.run_app(fake.build_app(), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
