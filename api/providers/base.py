"""The adapter interface and the OpenAI-compatible adapter most upstreams use."""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, Protocol

import aiohttp
from yarl import URL

from api.common import jsonutil


class Endpoint(StrEnum):
    chat = "/v1/chat/completions"
    completions = "/v1/completions"
    embeddings = "/v1/embeddings"
    rerank = "/v1/rerank"
    transcriptions = "/v1/audio/transcriptions"
    ocr = "/v1/ocr"
    models = "/v1/models"


@dataclass(frozen=True)
class Upstream:
    """What an adapter needs of one provider to reach it."""

    url: str  # base url, without `/v1`
    key: str | None
    model_name: str
    region: str | None = None  # bedrock: the AWS region
    api_version: str | None = None  # azure: the `api-version` of its calls


@dataclass(frozen=True)
class WireRequest:
    """A JSON request as it goes to the provider: translated, addressed, signed."""

    url: str  # percent-encoded as it must go out (a signature covers it)
    data: bytes
    headers: dict[str, str]

    @property
    def address(self) -> URL:
        """The url as aiohttp must send it: as it is, not re-encoded (`%3A` stays `%3A`)."""
        return URL(self.url, encoded=True)


class StreamTranslator(Protocol):
    """Turns a provider's own stream into OpenAI's chat completion chunks (SSE `data:` lines,
    ending with `data: [DONE]`), block by block as they arrive."""

    def feed(self, data: bytes) -> bytes: ...


class UpstreamCheckError(Exception):
    """A provider did not answer as a working provider of its model should."""


@dataclass(frozen=True)
class ProbeResult:
    max_context_length: int | None = None
    vector_size: int | None = None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def well_formed(endpoint: Endpoint, body: Any) -> bool:
    """Whether an answer (in OpenAI's shape, after its adapter) has what Tollgate and the
    clients' SDKs read from it. Providers are not trusted: a wrong shape is a failed call (502),
    not an exception deep in the accounting (500)."""
    if not isinstance(body, dict):
        return False
    if endpoint in (Endpoint.chat, Endpoint.completions):
        return isinstance(body.get("choices"), list)
    if endpoint is Endpoint.embeddings:
        return isinstance(body.get("data"), list)
    if endpoint is Endpoint.rerank:
        results = body.get("results")
        return isinstance(results, list) and all(
            isinstance(r, dict) and isinstance(r.get("index"), int) and _number(r.get("relevance_score")) for r in results
        )
    return True


def normalise_base_url(url: str) -> str:
    """Providers are stored without a trailing `/v1`: the adapters add the paths."""
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def silent_wav(seconds: float = 0.1, rate: int = 16_000) -> bytes:
    """A WAV file of `seconds` of silence, 16-bit mono."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(b"\0\0" * int(rate * seconds))
    return buffer.getvalue()


_SILENCE = silent_wav()


def completion_limit(body: dict[str, Any]) -> int | None:
    """The completion bound a chat body asks for: the smaller of `max_tokens` and
    `max_completion_tokens` where both are given."""
    max_tokens, max_completion_tokens = body.get("max_tokens"), body.get("max_completion_tokens")
    # `type(...) is int`: a bool is an int too, and bounds nothing
    if type(max_tokens) is int:
        return min(max_tokens, max_completion_tokens) if type(max_completion_tokens) is int else max_tokens
    return max_completion_tokens if type(max_completion_tokens) is int else None


class ProviderAdapter:
    """OpenAI's wire protocol; vLLM, Mistral, Albert and llama.cpp speak it too.

    `bound_field` is the one field of a chat's completion bound the provider obeys: OpenAI reads
    `max_completion_tokens` (its reasoning models refuse `max_tokens`); the compatible servers
    read `max_tokens` (llama.cpp and Mistral ignore `max_completion_tokens`). The bound is sent
    in that field alone, so that what Tollgate reserved for is what the provider generates."""

    # The legacy `/v1/completions`: served by OpenAI-compatible servers (vLLM, llama.cpp).
    serves_completions = True

    def __init__(self, bound_field: str = "max_tokens", tokenize: bool = False) -> None:
        self.bound_field = bound_field
        self.tokenize = tokenize  # serves vLLM's `POST /tokenize` (a chat prompt's count, template applied)

    def bounded(self, body: dict[str, Any]) -> dict[str, Any]:
        limit = completion_limit(body)
        if limit is None:
            return body
        body = {k: v for k, v in body.items() if k not in ("max_tokens", "max_completion_tokens")}
        body[self.bound_field] = limit
        return body

    def url(self, upstream: Upstream, endpoint: Endpoint, body: dict[str, Any] | None = None) -> str:
        """Where `endpoint` is served; `body` (OpenAI's shape) when the address depends on it."""
        return upstream.url + endpoint.value

    def headers(self, key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"} if key else {}

    def request(self, upstream: Upstream, endpoint: Endpoint, body: dict[str, Any]) -> WireRequest:
        """A JSON call of `endpoint` with `body` (OpenAI's shape, `model` set to the provider's)."""
        data = jsonutil.dumps(self.request_body(endpoint, body))
        return WireRequest(self.url(upstream, endpoint, body), data, {**self.headers(upstream.key), "Content-Type": "application/json"})

    def request_body(self, endpoint: Endpoint, body: dict[str, Any]) -> dict[str, Any]:
        return self.bounded(body) if endpoint is Endpoint.chat else body

    def response_body(self, endpoint: Endpoint, body: Any) -> Any:
        return body

    def error_body(self, status: int, body: Any) -> Any:
        """A provider's refusal (4xx) as the client gets it: OpenAI's `{"error": {...}}`."""
        return body

    def stream_translator(self, body: dict[str, Any]) -> StreamTranslator | None:
        """None: the provider streams OpenAI's chunks itself."""
        return None

    async def probe(self, session: aiohttp.ClientSession, upstream: Upstream, model_type: str, timeout: float) -> ProbeResult:
        """Check the provider serves its model, by a call a router of `model_type` must serve,
        and learn its context length or vector size."""
        key, model_name = upstream.key, upstream.model_name
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        if model_type == "automatic-speech-recognition":
            # A transcription of a tenth of a second of silence: servers of speech models
            # (faster-whisper-server) need not list their models.
            form = aiohttp.FormData()
            form.add_field("file", _SILENCE, filename="probe.wav", content_type="audio/wav")
            form.add_field("model", model_name)
            await self._call(session, "POST", self.url(upstream, Endpoint.transcriptions), key, None, client_timeout, form)
            return ProbeResult()
        if model_type == "text-embeddings-inference":
            probe = self.request(upstream, Endpoint.embeddings, {"model": model_name, "input": "tollgate probe"})
            answer = await self._send(session, Endpoint.embeddings, probe, client_timeout)
            try:
                size = len(answer["data"][0]["embedding"])
            except (KeyError, IndexError, TypeError) as exc:
                raise UpstreamCheckError("the provider's embeddings answer has no vector") from exc
            # Its input limit, where the provider tells it: chunks are split to fit (api/rag/).
            try:
                limit = await self.input_limit(session, upstream, client_timeout)
            except UpstreamCheckError:
                limit = None
            return ProbeResult(vector_size=size, max_context_length=limit)
        limit = await self._listed_length(session, upstream, client_timeout)
        if limit is False:
            raise UpstreamCheckError(f"the provider does not serve a model named '{model_name}'")
        return ProbeResult(max_context_length=limit)

    async def input_limit(self, session: aiohttp.ClientSession, upstream: Upstream, timeout: aiohttp.ClientTimeout) -> int | None:
        """An embedding model's input limit in tokens, from the model list (vLLM's `max_model_len`)."""
        limit = await self._listed_length(session, upstream, timeout)
        return None if limit is False else limit

    async def _listed_length(
        self, session: aiohttp.ClientSession, upstream: Upstream, timeout: aiohttp.ClientTimeout
    ) -> int | None | Literal[False]:
        """The model's context length from the model list; False when it is not listed."""
        model_name = upstream.model_name
        answer = await self._call(session, "GET", self.url(upstream, Endpoint.models), upstream.key, None, timeout)
        models = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(models, list):
            raise UpstreamCheckError("the provider's model list is not an OpenAI model list")
        for model in models:
            if isinstance(model, dict) and model.get("id") == model_name:
                length = model.get("max_model_len") or model.get("max_context_length")
                return length if isinstance(length, int) and not isinstance(length, bool) and length > 0 else None
        return False

    async def count_prompt(
        self, session: aiohttp.ClientSession, upstream: Upstream, messages: list[Any], timeout: float
    ) -> int | None:
        """The provider's own count of a chat prompt, its template applied; None where it cannot
        say (then Tollgate estimates it)."""
        if not self.tokenize:
            return None
        body = {"model": upstream.model_name, "messages": messages, "add_generation_prompt": True}
        try:
            answer = await self._call(session, "POST", upstream.url + "/tokenize", upstream.key, body,
                                      aiohttp.ClientTimeout(total=timeout))
        except UpstreamCheckError:
            return None
        count = answer.get("count") if isinstance(answer, dict) else None
        return count if isinstance(count, int) and not isinstance(count, bool) and count >= 0 else None

    async def _send(
        self, session: aiohttp.ClientSession, endpoint: Endpoint, request: WireRequest, timeout: aiohttp.ClientTimeout
    ) -> Any:
        """A probe's call made as the adapter makes real ones; its answer in OpenAI's shape."""
        try:
            async with session.post(request.address, data=request.data, headers=request.headers, timeout=timeout) as response:
                if response.status >= 400:
                    raise UpstreamCheckError(f"the provider answered {response.status} to POST {request.url}")
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamCheckError(f"the provider is unreachable at {request.url}: {exc.__class__.__name__}") from exc
        except ValueError as exc:
            raise UpstreamCheckError(f"the provider's answer to POST {request.url} is not JSON") from exc
        return self.response_body(endpoint, body)

    async def _call(
        self, session: aiohttp.ClientSession, method: str, url: str, key: str | None, body: Any, timeout: aiohttp.ClientTimeout,
        form: aiohttp.FormData | None = None,
    ) -> Any:
        try:
            sent: dict[str, Any] = {"data": form} if form is not None else {"json": body}
            async with session.request(method, url, headers=self.headers(key), timeout=timeout, **sent) as response:
                if response.status >= 400:
                    raise UpstreamCheckError(f"the provider answered {response.status} to {method} {url}")
                return await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamCheckError(f"the provider is unreachable at {url}: {exc.__class__.__name__}") from exc
        except ValueError as exc:
            raise UpstreamCheckError(f"the provider's answer to {method} {url} is not JSON") from exc
