"""The model endpoints' logic: resolve the model, call through the gateway, settle the usage."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp

from api.errors import DomainError, UpstreamError, status_for
from api.identity.auth import Principal
from api.calls.answers import UpstreamRejected
from api.calls.gateway import Gateway
from api.quota.quotas import Quotas
from api.calls.streaming import CLIENT_CLOSED, ChatStreamRelay
from api.calls.tokens import count_inputs, count_messages, count_text
from api.outages import unavailable_error
from api.providers import Endpoint
from api.usage.meter import Meter

logger = logging.getLogger("tollgate.errors")


@asynccontextmanager
async def metered(meter: Meter) -> AsyncIterator[Meter]:
    """Record the meter if the body fails before recording it: every request counts once, and
    its limits and budget are settled before the error goes out."""
    try:
        yield meter
    except UpstreamRejected as error:
        await _record_and_settle(meter, error.status)
        raise
    except DomainError as error:
        await _record_and_settle(meter, status_for(error))
        raise
    except asyncio.CancelledError:
        await asyncio.shield(_record_and_settle(meter, CLIENT_CLOSED))
        raise
    except BaseException as error:
        # A database or Redis that cannot be reached (the search of a chat reads the
        # database) is the 503 the HTTP layer would make of it: recorded and raised as such.
        unavailable = unavailable_error(error)
        if unavailable is None:
            await _record_and_settle(meter, 500)
            raise
        logger.warning("%s: %s: %r", meter.endpoint, unavailable.detail, error)
        await _record_and_settle(meter, status_for(unavailable))
        raise unavailable from error


async def _record_and_settle(meter: Meter, status: int) -> None:
    await meter.record(status)
    await meter.settle()


async def route_and_admit(
    gateway: Gateway,
    quotas: Quotas,
    caller: Principal,
    meter: Meter,
    endpoint: Endpoint,
    estimate: Callable[[], int],
    max_completion_tokens: int = 0,
) -> None:
    """Resolve the model, count the request against the caller's limits on it, and reserve
    the most it can cost from the caller's budget. Both are settled when it is recorded."""
    assert meter.model is not None
    router = meter.router = gateway.resolve(caller, meter.model, endpoint)
    quota = await quotas.admit(caller, router, estimate, max_completion_tokens)
    if quota is not None:
        meter.headers = quota.headers()
        meter.on_record(lambda record: quotas.settle(quota, record.total_tokens, record.cost_nanos))


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _completion_text(answer: dict[str, Any]) -> str:
    parts: list[str] = []
    for choice in answer.get("choices") or []:
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            continue
        for field in ("content", "reasoning_content"):
            if isinstance(message.get(field), str):
                parts.append(message[field])
        for call in message.get("tool_calls") or []:
            arguments = (call.get("function") or {}).get("arguments") if isinstance(call, dict) else None
            if isinstance(arguments, str):
                parts.append(arguments)
    return "".join(parts)


async def _settle(
    meter: Meter, answer: dict[str, Any], prompt: int, completion: int, check: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Put the usage in the answer and record it: 200, or the status of the error `check`
    raises when the answer cannot be used (charged all the same: the provider did the work)."""
    usage, cost, carbon = meter.usage(prompt, completion)
    answer["usage"] = usage
    if check is not None:
        try:
            check(answer)
        except DomainError as error:
            await meter.record(status_for(error), prompt, completion, cost, carbon)
            raise
    await meter.record(200, prompt, completion, cost, carbon)
    return answer


def _answer_dict(body: Any, meter: Meter) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise UpstreamError(f"Model '{meter.model}': the provider's answer is not a JSON object")
    return body


async def chat_completion(gateway: Gateway, meter: Meter, body: dict[str, Any], priority: int) -> dict[str, Any]:
    answer = await gateway.call_json(meter, Endpoint.chat, body, priority)
    result = _answer_dict(answer.body, meter)
    upstream_usage = result.get("usage") if isinstance(result.get("usage"), dict) else {}
    prompt = _int(upstream_usage.get("prompt_tokens"))
    completion = _int(upstream_usage.get("completion_tokens"))
    if prompt is None:
        prompt = count_messages(body.get("messages", []))
    if completion is None:
        completion = count_text(_completion_text(result))
    return await _settle(meter, result, prompt, completion)


async def open_chat_stream(
    gateway: Gateway, meter: Meter, body: dict[str, Any], priority: int, final_fields: dict[str, Any] | None = None
) -> ChatStreamRelay:
    # Always ask the provider for its real token counts.
    body = {**body, "stream": True, "stream_options": {**(body.get("stream_options") or {}), "include_usage": True}}
    stream = await gateway.open_stream(meter, body, priority)
    return ChatStreamRelay(gateway, meter, stream, body, final_fields)


async def embeddings(
    gateway: Gateway, meter: Meter, body: dict[str, Any], priority: int, check: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """`check`: raises the domain error the client gets for an answer it cannot use."""
    answer = await gateway.call_json(meter, Endpoint.embeddings, body, priority)
    result = _answer_dict(answer.body, meter)
    upstream_usage = result.get("usage") if isinstance(result.get("usage"), dict) else {}
    prompt = _int(upstream_usage.get("prompt_tokens"))
    if prompt is None:
        prompt = count_inputs(body.get("input"))
    return await _settle(meter, result, prompt, 0, check)


async def rerank(gateway: Gateway, meter: Meter, body: dict[str, Any], priority: int) -> dict[str, Any]:
    answer = await gateway.call_json(meter, Endpoint.rerank, body, priority)
    result = _answer_dict(answer.body, meter)
    results = result.get("results")
    if isinstance(results, list) and body.get("top_n"):
        result["results"] = sorted(results, key=lambda r: -float(r.get("relevance_score", 0)))[: body["top_n"]]
    upstream_usage = result.get("usage") if isinstance(result.get("usage"), dict) else {}
    prompt = _int(upstream_usage.get("prompt_tokens"))
    if prompt is None:
        prompt = count_text(body["query"]) + sum(count_text(d) for d in body["documents"])
    result.setdefault("object", "list")
    result.setdefault("model", meter.model)
    return await _settle(meter, result, prompt, 0)


async def transcribe(
    gateway: Gateway, meter: Meter, audio: bytes, filename: str, content_type: str, fields: dict[str, str], priority: int
) -> dict[str, Any]:
    def form(model_name: str) -> aiohttp.FormData:
        data = aiohttp.FormData()
        data.add_field("file", audio, filename=filename, content_type=content_type)
        data.add_field("model", model_name)
        for name, value in fields.items():
            data.add_field(name, value)
        return data

    answer = await gateway.call_multipart(meter, Endpoint.transcriptions, form, priority)
    result = _answer_dict(answer.body, meter)
    text = result.get("text") if isinstance(result.get("text"), str) else ""
    # Transcripts are generated text: their tokens are the completion.
    return await _settle(meter, result, 0, count_text(text))
