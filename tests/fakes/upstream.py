"""A fake model provider speaking the OpenAI-compatible wire protocol over real HTTP.

It is the one test double of the suite: Tollgate talks to it exactly as to vLLM or OpenAI.
Behaviour is injected by changing `FakeUpstream.behaviour` (status codes, delays, dropped
connections, malformed output) and every request it receives is logged in `received`.

Run alone (for benchmarks): `python -m tests.fakes.upstream --port 9100`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import io
import itertools
import json
import re
import socket
import struct
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

CHAT_MODEL = "fake-chat"
EMBEDDING_MODEL = "fake-embed"


@dataclass
class Behaviour:
    fail_status: int | None = None  # answer this status instead of a result...
    fail_times: int = -1  # ...this many times (-1: always)
    retry_after: str | None = None  # the Retry-After header of those failures
    delay_seconds: float = 0.0  # before the response headers
    chunk_delay_seconds: float = 0.0  # between streamed chunks
    drop_connection: bool = False  # close the socket without answering
    reset_connection: bool = False  # reset the connection (TCP RST) without answering
    drop_after_chunks: int | None = None  # close the socket mid-stream
    reset_after_chunks: int | None = None  # reset the connection (TCP RST) mid-stream
    first_event_delay_seconds: float = 0.0  # after a stream's headers, before its first event
    reset_before_first_event: bool = False  # send a stream's headers, then reset the connection
    error_event_after_chunks: int | None = None  # an OpenAI-style `data: {"error": ...}` event mid-stream
    malformed: bool = False  # 200 with a body that is not JSON / not SSE JSON
    wrong_shape: bool = False  # 200 with JSON that is not the endpoint's answer
    bad_event_after_chunks: int | None = None  # a `data:` line that is not JSON after this many chunks
    omit_done: bool = False  # end the stream (cleanly) without `data: [DONE]`
    junk_after_done: bool = False  # keep writing (events that are not JSON) after `data: [DONE]`
    omit_finish: bool = False  # ...and without the chunk carrying `finish_reason`
    endless: bool = False  # stream content chunks until the caller hangs up
    reply_bytes: int | None = None  # a non-streamed completion of about this many bytes
    chunked_body: bool = False  # send non-streamed answers chunked, with no Content-Length
    omit_usage: bool = False  # no `usage` in answers
    reply_words: int = 5  # completion length in words (one token per word)
    reply_text: str | None = None  # the completion, exactly (streamed a space-separated piece at a time)
    set_cookie: str | None = None  # a Set-Cookie header on non-streamed answers
    embedding_dimensions: int = 8
    vectors_missing: int = 0  # embeddings answers this many vectors short (usage still for every input)
    max_context_length: int = 8192  # reported by /v1/models; embeddings refuse a longer input, as vLLM does
    # Like llama.cpp: counts a chat prompt with its template's tokens (5 a message, 4 more),
    # ignores `max_completion_tokens` and `stream_options` (no usage in streams).
    llama_cpp: bool = False
    ignore_bounds: bool = False  # generates `reply_words` whatever `max_tokens` says
    no_model_list: bool = False  # no GET /v1/models (faster-whisper-server)
    models_blocked_while_generating: bool = False  # GET /v1/models waits for streams to end (llama.cpp's model lock)


@dataclass
class Received:
    path: str
    body: Any
    headers: dict[str, str]


def count_tokens(text: str) -> int:
    """The fake's tokenizer: one token per whitespace-separated word."""
    return len(text.split())


def _first_image(messages: list[dict[str, Any]]) -> str | None:
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and part.get("type") == "image_url":
                    url = part.get("image_url")
                    return url.get("url") if isinstance(url, dict) else url
    return None


def _message_text(messages: list[dict[str, Any]]) -> str:
    parts: list[str] = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p.get("text", "") for p in content if isinstance(p, dict))
    return " ".join(parts)


@dataclass
class FakeUpstream:
    models: list[str] = field(default_factory=lambda: [CHAT_MODEL, EMBEDDING_MODEL])
    api_key: str | None = None
    behaviour: Behaviour = field(default_factory=Behaviour)
    received: list[Received] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    cancelled: int = 0
    chunks_sent: int = 0  # streamed content chunks written, all calls together
    model_list_requests: int = 0
    model_lists_during_streams: int = 0
    streaming: int = 0  # streams being written now
    log_requests: bool = True

    def __post_init__(self) -> None:
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # lifecycle

    def build_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._legacy_completion)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/v1/rerank", self._rerank)
        app.router.add_post("/rerank", self._tei_rerank)
        app.router.add_post("/v1/audio/transcriptions", self._transcription)
        app.router.add_post("/v1/ocr", self._ocr)
        app.router.add_get("/health", self._health)
        app.router.add_post("/tokenize", self._tokenize)
        app.router.add_get("/info", self._info)
        return app

    async def start(self, port: int = 0) -> str:
        self._runner = web.AppRunner(self.build_app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{bound}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # behaviour helpers

    def _consume_failure(self) -> int | None:
        b = self.behaviour
        if b.fail_status is None or b.fail_times == 0:
            return None
        if b.fail_times > 0:
            b.fail_times -= 1
        return b.fail_status

    async def _enter(self, request: web.Request, body: Any) -> web.StreamResponse | None:
        """Log, check the key, apply injected faults. Returns a response to send instead, if any."""
        if self.log_requests:
            self.received.append(Received(request.path, body, dict(request.headers)))
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": {"message": "invalid api key", "type": "authentication_error"}}, status=401)
        if self.behaviour.delay_seconds:
            await asyncio.sleep(self.behaviour.delay_seconds)
        if self.behaviour.drop_connection:
            assert request.transport is not None
            request.transport.close()
            raise asyncio.CancelledError
        if self.behaviour.reset_connection:
            self._reset(request)
            raise asyncio.CancelledError
        status = self._consume_failure()
        if status is not None:
            headers = {"Retry-After": self.behaviour.retry_after} if self.behaviour.retry_after is not None else None
            return web.json_response({"error": {"message": f"injected failure {status}", "code": status}},
                                     status=status, headers=headers)
        if self.behaviour.malformed:
            return web.Response(text='{"choices": [ this is not json', content_type="application/json")
        if self.behaviour.wrong_shape:
            if request.path == "/rerank":  # TEI's own rerank answers a list
                return web.json_response([{"idx": 0}, 1])
            return web.json_response({"object": "nonsense", "choices": "none", "data": {"embedding": 1},
                                      "results": [{"index": "0", "relevance_score": "high"}]})
        return None

    # endpoints

    async def _health(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def _info(self, _request: web.Request) -> web.Response:
        """Text Embeddings Inference's description of the model it serves."""
        return web.json_response({"model_id": EMBEDDING_MODEL, "max_input_length": self.behaviour.max_context_length,
                                  "max_client_batch_size": 32})

    async def _models(self, request: web.Request) -> web.StreamResponse:
        self.model_list_requests += 1
        self.model_lists_during_streams += 1 if self.streaming else 0
        if self.behaviour.no_model_list:
            return web.json_response({"detail": "Not Found"}, status=404)
        if self.behaviour.models_blocked_while_generating:
            while self.streaming:
                await asyncio.sleep(0.01)
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.json_response({"error": {"message": "invalid api key"}}, status=401)
        data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake", "max_model_len": self.behaviour.max_context_length}
                for m in self.models]
        return web.json_response({"object": "list", "data": data})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return web.json_response({"error": {"message": "bad json"}}, status=400)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            early = await self._enter(request, body)
            if early is not None:
                return early
            if body.get("model") not in self.models:
                return web.json_response({"error": {"message": f"model {body.get('model')} not found"}}, status=404)
            prompt_tokens = self._prompt_tokens(body.get("messages", []))
            if body.get("stream"):
                return await self._stream_chat(request, body, prompt_tokens)
            return await self._json(request, self._completion(body, prompt_tokens))
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        except ConnectionResetError:  # the caller hung up mid-stream
            self.cancelled += 1
            return web.Response(status=499)
        finally:
            self.in_flight -= 1

    def _prompt_tokens(self, messages: list[dict[str, Any]]) -> int:
        words = count_tokens(_message_text(messages))
        return words + 5 * len(messages) + 4 if self.behaviour.llama_cpp else words

    async def _tokenize(self, request: web.Request) -> web.StreamResponse:
        """vLLM's /tokenize: a chat prompt's tokens, its template applied."""
        body = await request.json()
        count = self._prompt_tokens(body.get("messages", []))
        return web.json_response({"count": count, "max_model_len": self.behaviour.max_context_length, "tokens": list(range(count))})

    async def _json(self, request: web.Request, answer: dict[str, Any]) -> web.StreamResponse:
        if not self.behaviour.chunked_body:
            cookie = self.behaviour.set_cookie
            return web.json_response(answer, headers={"Set-Cookie": cookie} if cookie else None)
        # No Content-Length: the reader cannot know the size before it has read the body.
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        raw = json.dumps(answer).encode()
        for start in range(0, len(raw), 64 * 1024):
            await response.write(raw[start:start + 64 * 1024])
        await response.write_eof()
        return response

    @staticmethod
    def _reset(request: web.Request) -> None:
        """Abort the connection with a TCP RST (SO_LINGER 0), not an orderly close."""
        assert request.transport is not None
        sock = request.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        request.transport.abort()

    def _reply_words(self, body: dict[str, Any]) -> list[str]:
        image = _first_image(body.get("messages", []))
        if image is not None:  # a vision model "reading" the image: a tag unique to its bytes
            return ["read", "image", hashlib.sha256(image.encode()).hexdigest()[:12]]
        if self.behaviour.reply_text is not None:
            return self.behaviour.reply_text.split(" ")
        words = self.behaviour.reply_words
        limit = body.get("max_tokens") if self.behaviour.llama_cpp else body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(limit, int) and not self.behaviour.ignore_bounds:
            words = min(words, limit)
        return [f"word{i}" for i in range(words)]

    def _completion(self, body: dict[str, Any], prompt_tokens: int) -> dict[str, Any]:
        words = self._reply_words(body)
        if self.behaviour.reply_bytes is not None:  # one "token" per 10 bytes: "lorem123 "
            words = [f"lorem{i % 1000:03d}" for i in range(self.behaviour.reply_bytes // 9)]
        message: dict[str, Any] = {"role": "assistant", "content": " ".join(words), "reasoning_content": "thinking"}
        finish = "stop"
        if body.get("tools") and body.get("tool_choice") != "none":
            tool = body["tools"][0]["function"]["name"]
            message = {"role": "assistant", "content": None,
                       "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": tool, "arguments": '{"city": "Paris"}'}}]}
            finish = "tool_calls"
        answer: dict[str, Any] = {
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": body["model"], "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "system_fingerprint": "fake-upstream",
        }
        if not self.behaviour.omit_usage:
            answer["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": len(words), "total_tokens": prompt_tokens + len(words)}
        return answer

    async def _stream_chat(self, request: web.Request, body: dict[str, Any], prompt_tokens: int) -> web.StreamResponse:
        self.streaming += 1
        try:
            return await self._write_stream(request, body, prompt_tokens)
        finally:
            self.streaming -= 1

    async def _write_stream(self, request: web.Request, body: dict[str, Any], prompt_tokens: int) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        chunk_id, created, words = f"chatcmpl-{uuid.uuid4().hex}", int(time.time()), self._reply_words(body)

        def event(payload: dict[str, Any]) -> bytes:
            return b"data: " + json.dumps(payload).encode() + b"\n\n"

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return {"id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": body["model"],
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        b = self.behaviour
        if b.first_event_delay_seconds:  # "processing the prompt"
            await asyncio.sleep(b.first_event_delay_seconds)
        if b.reset_before_first_event:
            self._reset(request)
            return response
        await response.write(event(chunk({"role": "assistant", "content": ""})))
        if b.endless:  # never finishes: only the caller hanging up ends it
            words = (f"word{i}" for i in itertools.count())  # type: ignore[assignment]
        for index, word in enumerate(words):
            if b.drop_after_chunks is not None and index >= b.drop_after_chunks:
                assert request.transport is not None
                request.transport.close()
                return response
            if b.reset_after_chunks is not None and index >= b.reset_after_chunks:
                self._reset(request)
                return response
            if b.chunk_delay_seconds:
                await asyncio.sleep(b.chunk_delay_seconds)
            elif b.endless:  # writes that never block would starve the loop the gateway shares
                await asyncio.sleep(0)
            if b.error_event_after_chunks is not None and index >= b.error_event_after_chunks:
                await response.write(event({"error": {"message": "injected stream failure", "type": "server_error", "code": 500}}))
                break
            if b.malformed or (b.bad_event_after_chunks is not None and index >= b.bad_event_after_chunks):
                await response.write(b"data: {not json\n\n")
                continue
            await response.write(event(chunk({"content": word if index == 0 else " " + word})))
            self.chunks_sent += 1
        if not b.omit_finish:
            await response.write(event(chunk({}, "stop")))
        include_usage = (body.get("stream_options") or {}).get("include_usage") and not b.llama_cpp
        if include_usage and not b.omit_usage and not b.omit_finish:
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(words), "total_tokens": prompt_tokens + len(words)}
            await response.write(event({"id": chunk_id, "object": "chat.completion.chunk", "created": created,
                                        "model": body["model"], "choices": [], "usage": usage}))
        if not b.omit_done:
            await response.write(b"data: [DONE]\n\n")
        if b.junk_after_done:
            await response.write(b"data: {not json\n\ndata: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _legacy_completion(self, request: web.Request) -> web.StreamResponse:
        """The legacy `/v1/completions` (vLLM and llama.cpp serve it): the prompt continued."""
        body = await request.json()
        early = await self._enter(request, body)
        if early is not None:
            return early
        if body.get("model") not in self.models:
            return web.json_response({"error": {"message": f"model {body.get('model')} not found"}}, status=404)
        prompt = body.get("prompt")
        prompt_tokens = len(prompt) if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt) else count_tokens(
            prompt if isinstance(prompt, str) else " ".join(map(str, prompt or [])))
        limit = body.get("max_tokens", 16)
        words = [f"word{i}" for i in range(min(self.behaviour.reply_words, limit if isinstance(limit, int) else 16))]
        head = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()), "model": body["model"]}
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(words), "total_tokens": prompt_tokens + len(words)}
        finish = "length" if len(words) < self.behaviour.reply_words else "stop"
        if not body.get("stream"):
            return web.json_response({**head, "choices": [{"index": 0, "text": " " + " ".join(words), "logprobs": None,
                                                          "finish_reason": finish}], "usage": usage})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for word in words:
            choice = {"index": 0, "text": " " + word, "logprobs": None, "finish_reason": None}
            await response.write(b"data: " + json.dumps({**head, "choices": [choice]}).encode() + b"\n\n")
        last = {"index": 0, "text": "", "logprobs": None, "finish_reason": finish}
        await response.write(b"data: " + json.dumps({**head, "choices": [last]}).encode() + b"\n\n")
        if (body.get("stream_options") or {}).get("include_usage"):
            await response.write(b"data: " + json.dumps({**head, "choices": [], "usage": usage}).encode() + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    def _vector(self, text: str) -> list[float]:
        """Words and character trigrams hashed into the vector's dimensions, normalised: texts
        sharing words (or word stems) are closer than unrelated texts, like a real model's."""
        size = self.behaviour.embedding_dimensions
        vector = [0.0] * size
        for word in re.findall(r"\w+", text.lower()):
            features = [word] + [word[i:i + 3] for i in range(max(1, len(word) - 2))]
            for feature in features:
                digest = hashlib.blake2b(feature.encode(), digest_size=8).digest()
                index = int.from_bytes(digest[:4], "big") % size
                vector[index] += 1.0 if digest[4] % 2 else -1.0
        norm = sum(x * x for x in vector) ** 0.5
        if norm == 0:  # no words: still a valid, distinct vector
            digest = hashlib.sha256(text.encode()).digest()
            return [digest[i % len(digest)] / 255 for i in range(size)]
        return [x / norm for x in vector]

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._embeddings_answer(request, body)
        finally:
            self.in_flight -= 1

    async def _embeddings_answer(self, request: web.Request, body: Any) -> web.StreamResponse:
        early = await self._enter(request, body)
        if early is not None:
            return early
        inputs = body.get("input")
        texts = [inputs] if isinstance(inputs, str) else list(inputs or [])
        longest = max((count_tokens(str(t)) for t in texts), default=0)
        if longest > self.behaviour.max_context_length:
            # vLLM's answer (an OpenAI error body); it never truncates unless asked to.
            message = (f"This model's maximum context length is {self.behaviour.max_context_length} tokens. However, you "
                       f"requested {longest} tokens in the input for embedding generation. Please reduce the length of the input.")
            return web.json_response({"error": {"message": message, "type": "BadRequestError", "param": None, "code": 400}},
                                     status=400)
        tokens = sum(count_tokens(str(t)) for t in texts)
        answer: dict[str, Any] = {
            "object": "list", "model": body.get("model"),
            "data": [{"object": "embedding", "index": i, "embedding": self._vector(str(t))}
                     for i, t in enumerate(texts[:max(0, len(texts) - self.behaviour.vectors_missing)])],
        }
        if not self.behaviour.omit_usage:
            answer["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        return web.json_response(answer)

    def _scores(self, query: str, documents: list[str]) -> list[dict[str, Any]]:
        query_words = set(query.lower().split())
        scored = [{"index": i, "relevance_score": len(query_words & set(d.lower().split())) / (len(query_words) or 1)}
                  for i, d in enumerate(documents)]
        return sorted(scored, key=lambda r: -r["relevance_score"])

    async def _rerank(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        early = await self._enter(request, body)
        if early is not None:
            return early
        documents = [str(d) for d in body.get("documents", [])]
        tokens = count_tokens(body.get("query", "")) + sum(count_tokens(d) for d in documents)
        return web.json_response({"id": f"rerank-{uuid.uuid4().hex}", "model": body.get("model"),
                                  "results": self._scores(body.get("query", ""), documents),
                                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})

    async def _tei_rerank(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        early = await self._enter(request, body)
        if early is not None:
            return early
        results = self._scores(body.get("query", ""), [str(t) for t in body.get("texts", [])])
        return web.json_response([{"index": r["index"], "score": r["relevance_score"]} for r in results])

    async def _transcription(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        audio = form.get("file")
        size = len(audio.file.read()) if hasattr(audio, "file") else 0
        early = await self._enter(request, {k: v for k, v in form.items() if k != "file"})
        if early is not None:
            return early
        text = f"transcribed {size} bytes"
        seconds = max(1, size // 32000)
        answer_format = form.get("response_format") or "json"
        if answer_format == "text":
            return web.Response(text=text + "\n", content_type="text/plain")
        if answer_format == "srt":
            return web.Response(text=f"1\n00:00:00,000 --> 00:00:0{min(seconds, 9)},000\n{text}\n\n", content_type="text/plain")
        if answer_format == "vtt":
            return web.Response(text=f"WEBVTT\n\n00:00:00.000 --> 00:00:0{min(seconds, 9)}.000\n{text}\n\n", content_type="text/vtt")
        if answer_format == "verbose_json":
            return web.json_response({"task": "transcribe", "language": "english", "duration": seconds, "text": text,
                                      "segments": [{"id": 0, "start": 0.0, "end": float(seconds), "text": text}]})
        return web.json_response({"text": text, "usage": {"type": "duration", "seconds": seconds}})

    async def _ocr_pages(self, document: dict[str, Any]) -> list[str]:
        """Mistral OCR's pages: a PDF's text layer (read with pypdf), or one page for an image."""
        url = document.get("document_url") or document.get("image_url") or ""
        if isinstance(url, dict):
            url = url.get("url", "")
        if not url.startswith("data:"):
            return [f"fetched {url}"]
        header, _, data = url.partition(",")
        raw = base64.b64decode(data)
        if "pdf" in header:
            from pypdf import PdfReader

            return [page.extract_text() for page in PdfReader(io.BytesIO(raw)).pages]
        return [f"image of {len(raw)} bytes"]

    async def _ocr(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        early = await self._enter(request, body)
        if early is not None:
            return early
        texts = await self._ocr_pages(body.get("document") or {})
        wanted = body.get("pages")
        indices = [i for i in range(len(texts)) if wanted is None or i in wanted]
        pages = [{"index": i, "markdown": f"# OCR\n\n{texts[i]}", "images": [],
                  "dimensions": {"dpi": 200, "height": 2200, "width": 1700}} for i in indices]
        return web.json_response({"pages": pages, "model": body.get("model"),
                                  "usage_info": {"pages_processed": len(pages), "doc_size_bytes": 0}})


def main() -> None:
    parser = argparse.ArgumentParser(description="fake OpenAI-compatible upstream")
    parser.add_argument("--port", type=int, default=9100)
    args = parser.parse_args()
    upstream = FakeUpstream(log_requests=False)
    web.run_app(upstream.build_app(), host="127.0.0.1", port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
