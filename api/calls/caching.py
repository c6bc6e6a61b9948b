"""The response cache, a step of the call pipeline: an identical call is answered without the
provider, from what it answered before.

Opt-in per router (`cache_ttl_seconds`), and a key may opt out (`use_cache: false`). The cache
key is the request that reaches the provider (after the policies and the search that prepare
it), less what only changes how the answer is delivered (`stream`, `user`, `metadata`), and is
scoped to the caller's organisation (else the user): one tenant never reads another's answers.
A chat call's answer varies with its temperature: only `temperature: 0` is cached unless the
router says otherwise (`cache_any_temperature`), a call without one taking the providers'
default of 1.

It sits after admission: a hit counts against the request limits and is settled with no tokens
and the router's price for a hit (`cost_cache_hit`). It is recorded like any call, `cached`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import orjson

from api.calls.call import Call
from api.providers import Endpoint
from api.state.response_cache import ResponseCache
from api.usage.accounting import NO_CARBON

CACHE_HEADER = "x-tollgate-cache"
CACHEABLE = frozenset({Endpoint.chat.value, Endpoint.embeddings.value, Endpoint.rerank.value})
DELIVERY_FIELDS = frozenset({"stream", "stream_options", "user", "metadata"})
DEFAULT_TEMPERATURE = 1.0  # OpenAI's, and most providers'


class AnswerFromCache:
    def __init__(self, cache: ResponseCache) -> None:
        self._cache = cache

    async def enter(self, call: Call) -> None:
        call.cache_key = cache_key(call)
        if call.cache_key is None:
            return
        stored = await self._cache.get(call.cache_key)
        if stored is None:
            call.headers[CACHE_HEADER] = "miss"
            return
        assert call.router is not None
        call.headers[CACHE_HEADER] = "hit"
        call.cached = True
        call.tokens(0, 0)
        call.cost_nanos = call.router.cost_cache_hit_micros * 1000
        call.carbon = NO_CARBON
        call.usage = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cost": call.cost_nanos / 1e9,
                      "carbon": NO_CARBON.as_dict(), "requests": 1, "cached": True}
        call.answer = {**orjson.loads(stored), "usage": call.usage}  # the steps after this one are skipped

    async def leave(self, call: Call) -> None:
        if call.cached or call.cache_key is None or call.status != 200 or call.router is None:
            return
        answer = call.answer if call.stream is None else (call.streamed_answer if call.streamed_plain else None)
        if answer is None or call.router.cache_ttl_seconds is None:
            return
        kept = orjson.dumps({field: value for field, value in answer.items() if field != "usage"})
        await self._cache.put(call.cache_key, kept, call.router.cache_ttl_seconds)


def cache_key(call: Call) -> str | None:
    """The key `call`'s answer is kept under, or None when it is not to be cached."""
    router = call.router
    # By what the upstream request is, not by the route that took it: Anthropic's Messages API
    # sends a chat, and shares its answers with /v1/chat/completions (each renders its own shape).
    endpoint = call.operation.endpoint.value
    if router is None or router.cache_ttl_seconds is None or not call.principal.use_cache or endpoint not in CACHEABLE:
        return None
    body = getattr(call.operation, "body", None)
    if not isinstance(body, dict):
        return None
    if endpoint == Endpoint.chat.value and not router.cache_any_temperature:
        temperature = body.get("temperature", DEFAULT_TEMPERATURE)
        if temperature != 0:
            return None
    principal = call.principal
    scope = f"org-{principal.organization_id}" if principal.organization_id is not None else f"user-{principal.user_id}"
    request = {field: value for field, value in body.items() if field not in DELIVERY_FIELDS}
    text = json.dumps([scope, router.id, endpoint, request], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


async def replayed_stream(call: Call, final_fields: dict[str, Any]) -> AsyncIterator[bytes]:
    """A cached chat answer as the stream its request asked for: each choice's message as one
    delta, then its finish reason, the usage chunk and [DONE], as a live stream ends."""
    assert call.answer is not None
    answer = call.answer
    head = {"id": answer.get("id", f"chatcmpl-{call.request_id}"), "object": "chat.completion.chunk",
            "created": answer.get("created", 0), "model": answer.get("model", call.model)}
    for choice in answer.get("choices") or []:
        message = dict(choice.get("message") or {})
        if isinstance(message.get("tool_calls"), list):
            message["tool_calls"] = [{"index": i, **tool} for i, tool in enumerate(message["tool_calls"])]
        index = choice.get("index", 0)
        yield _event({**head, "choices": [{"index": index, "delta": message, "finish_reason": None}]})
        yield _event({**head, "choices": [{"index": index, "delta": {}, "finish_reason": choice.get("finish_reason")}]})
    yield _event({**head, "choices": [], "usage": call.usage, **final_fields})
    yield b"data: [DONE]\n\n"


def _event(chunk: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"
