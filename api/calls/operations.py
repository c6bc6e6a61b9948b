"""What each model endpoint asks of its provider: how it is estimated, bounded and forwarded.

An operation reads the provider's answer and sets the call's tokens: the provider's own counts
when it gives them, else Tollgate's count of what was sent and generated.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from api.calls.audio import transcript_bound, transcript_text
from api.calls.call import Call, Defaults
from api.calls.gateway import Gateway
from api.calls.tokens import count_chat_prompt, count_inputs, count_messages, count_text
from api.errors import InvalidRequestError, UpstreamError
from api.providers import Endpoint, serves_completions
from api.quota.quotas import Quotas


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def upstream_usage(answer: dict[str, Any]) -> tuple[int | None, int | None]:
    """The provider's own (prompt, completion) token counts, where it gave them."""
    usage = answer.get("usage") if isinstance(answer.get("usage"), dict) else {}
    return _int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens"))


def answer_object(call: Call, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise UpstreamError(f"Model '{call.model}': the provider's answer is not a JSON object")
    return body


def completion_text(answer: dict[str, Any]) -> str:
    parts: list[str] = []
    for choice in answer.get("choices") or []:
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            continue
        for name in ("content", "reasoning_content"):
            if isinstance(message.get(name), str):
                parts.append(message[name])
        for tool_call in message.get("tool_calls") or []:
            arguments = (tool_call.get("function") or {}).get("arguments") if isinstance(tool_call, dict) else None
            if isinstance(arguments, str):
                parts.append(arguments)
    return "".join(parts)


@dataclass
class Chat(Defaults):
    """A chat completion, answered whole or streamed. `final_fields` go into the answer (or the
    stream's last chunk): a chat with search adds its results there."""

    body: dict[str, Any]
    endpoint: Endpoint = Endpoint.chat
    final_fields: dict[str, Any] = field(default_factory=dict)

    @property
    def streamed(self) -> bool:
        return bool(self.body.get("stream"))

    def prompt_estimate(self) -> int:
        return count_messages(self.body["messages"])

    def completion_bound(self, call: Call, quotas: Quotas) -> int:
        assert call.router is not None
        return quotas.cap_completion(call.principal, call.router, self.body)

    async def forward(self, call: Call, gateway: Gateway) -> None:
        if self.streamed:
            # Always ask the provider for its real token counts.
            options = {**(self.body.get("stream_options") or {}), "include_usage": True}
            self.body = {**self.body, "stream": True, "stream_options": options}
            call.stream = await gateway.open_stream(call, self.body, call.priority)
            return
        reply = await gateway.call_json(call, Endpoint.chat, self.body, call.priority)
        answer = answer_object(call, reply.body)
        prompt, completion = upstream_usage(answer)
        call.tokens(
            prompt if prompt is not None else count_chat_prompt(self.body.get("messages", [])),
            completion if completion is not None else count_text(completion_text(answer)),
        )
        answer.update(self.final_fields)
        call.answer = answer


# OpenAI's (and vLLM's) `max_tokens` for a legacy completion that names none.
LEGACY_DEFAULT_MAX_TOKENS = 16


@dataclass
class Completion(Defaults):
    """A legacy text completion (`/v1/completions`), whole or streamed, on a text-generation
    router whose providers serve it (OpenAI-compatible servers: vLLM, llama.cpp)."""

    body: dict[str, Any]
    endpoint: Endpoint = Endpoint.completions

    @property
    def streamed(self) -> bool:
        return bool(self.body.get("stream"))

    def prompt_estimate(self) -> int:
        return count_inputs(self.body.get("prompt"))

    def completion_bound(self, call: Call, quotas: Quotas) -> int:
        if not isinstance(self.body.get("max_tokens"), int):
            self.body["max_tokens"] = LEGACY_DEFAULT_MAX_TOKENS  # the API's default, made explicit: it is reserved for
        return quotas.cap_completion(call.principal, call.router, self.body) if call.router is not None else 0

    async def prepare(self, call: Call) -> None:
        assert call.router is not None
        if not all(serves_completions(p.type) for p in call.router.providers):
            raise InvalidRequestError(f"Model '{call.model}' is served by providers without /v1/completions: use /v1/chat/completions")

    async def forward(self, call: Call, gateway: Gateway) -> None:
        if self.streamed:
            options = {**(self.body.get("stream_options") or {}), "include_usage": True}
            self.body = {**self.body, "stream": True, "stream_options": options}
            call.stream = await gateway.open_stream(call, self.body, call.priority, Endpoint.completions)
            return
        reply = await gateway.call_json(call, Endpoint.completions, self.body, call.priority)
        answer = answer_object(call, reply.body)
        prompt, completion = upstream_usage(answer)
        text = "".join(c.get("text") or "" for c in answer.get("choices") or [] if isinstance(c, dict) and isinstance(c.get("text"), str))
        call.tokens(prompt if prompt is not None else self.prompt_estimate(), completion if completion is not None else count_text(text))
        call.answer = answer


@dataclass
class Embeddings(Defaults):
    """`check` raises the domain error the client gets for an answer it cannot use (charged all
    the same: the provider did the work)."""

    body: dict[str, Any]
    check: Callable[[dict[str, Any]], None] | None = None
    endpoint: Endpoint = Endpoint.embeddings

    def prompt_estimate(self) -> int:
        return count_inputs(self.body["input"])

    async def forward(self, call: Call, gateway: Gateway) -> None:
        reply = await gateway.call_json(call, Endpoint.embeddings, self.body, call.priority)
        answer = answer_object(call, reply.body)
        prompt, _ = upstream_usage(answer)
        call.tokens(prompt if prompt is not None else count_inputs(self.body.get("input")), 0)
        if self.check is not None:
            self.check(answer)
        call.answer = answer


@dataclass
class Rerank(Defaults):
    body: dict[str, Any]
    endpoint: Endpoint = Endpoint.rerank

    def prompt_estimate(self) -> int:
        return count_text(self.body["query"]) + sum(count_text(d) for d in self.body["documents"])

    async def forward(self, call: Call, gateway: Gateway) -> None:
        reply = await gateway.call_json(call, Endpoint.rerank, self.body, call.priority)
        answer = answer_object(call, reply.body)
        results = answer.get("results")
        if isinstance(results, list) and self.body.get("top_n"):
            answer["results"] = sorted(results, key=lambda r: -float(r.get("relevance_score", 0)))[: self.body["top_n"]]
        prompt, _ = upstream_usage(answer)
        call.tokens(prompt if prompt is not None else self.prompt_estimate(), 0)
        answer.setdefault("id", f"rerank-{call.request_id}")  # TEI's answers have none
        answer.setdefault("object", "list")
        answer.setdefault("model", call.model)
        call.answer = answer


@dataclass
class Transcription(Defaults):
    """A transcription in the `response_format` the caller asked for: JSON (`json`,
    `verbose_json`) gets its usage; `text`, `srt` and `vtt` are passed on with the provider's
    content type."""

    audio: bytes
    filename: str
    content_type: str
    fields: dict[str, str]
    max_tokens: int
    endpoint: Endpoint = Endpoint.transcriptions

    # No prompt estimate: the audio's length in tokens is unknown before it is transcribed. Its
    # transcript is bounded by its duration.
    def completion_bound(self, call: Call, quotas: Quotas) -> int:
        return transcript_bound(self.audio, self.max_tokens)

    async def forward(self, call: Call, gateway: Gateway) -> None:
        def form(model_name: str) -> aiohttp.FormData:
            data = aiohttp.FormData()
            data.add_field("file", self.audio, filename=self.filename, content_type=self.content_type)
            data.add_field("model", model_name)
            for name, value in self.fields.items():
                data.add_field(name, value)
            return data

        reply = await gateway.call_multipart(call, Endpoint.transcriptions, form, call.priority)
        if reply.raw is not None:
            content_type = reply.content_type or "text/plain"
            call.tokens(0, count_text(transcript_text(reply.raw, content_type)))
            call.raw_answer = (reply.raw, content_type)
            return
        answer = answer_object(call, reply.body)
        text = answer.get("text") if isinstance(answer.get("text"), str) else ""
        tokens = count_text(text)
        call.tokens(0, tokens)  # a transcript is generated text: its tokens are the completion
        # OpenAI's transcription usage names what it counts (`type`: the audio's `duration` in
        # seconds, or `tokens`); the provider's is kept, and one without it gets the token form.
        # `Price` adds Tollgate's own fields (tokens, cost, carbon) to it.
        if not (isinstance(answer.get("usage"), dict) and "type" in answer["usage"]):
            answer["usage"] = {"type": "tokens", "input_tokens": 0, "output_tokens": tokens, "total_tokens": tokens}
        call.answer = answer


@dataclass
class LocalWork(Defaults):
    """A request served without a model (a PDF's text layer read by /v1/parse), recorded like
    any call: run by a pipeline of `Record` and `Forward` alone."""

    work: Callable[[], Awaitable[dict[str, Any]]]
    endpoint: Endpoint = Endpoint.models  # no router is resolved for it

    async def forward(self, call: Call, gateway: Gateway) -> None:
        call.answer = await self.work()
