"""The adapter interface and the OpenAI-compatible adapter most upstreams use."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

import aiohttp


class Endpoint(StrEnum):
    chat = "/v1/chat/completions"
    embeddings = "/v1/embeddings"
    rerank = "/v1/rerank"
    transcriptions = "/v1/audio/transcriptions"
    ocr = "/v1/ocr"
    models = "/v1/models"


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
    if endpoint is Endpoint.chat:
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


class ProviderAdapter:
    """OpenAI's wire protocol; vLLM, Mistral and Albert speak it too."""

    def url(self, base_url: str, endpoint: Endpoint) -> str:
        return base_url + endpoint.value

    def headers(self, key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"} if key else {}

    def request_body(self, endpoint: Endpoint, body: dict[str, Any]) -> dict[str, Any]:
        return body

    def response_body(self, endpoint: Endpoint, body: Any) -> Any:
        return body

    async def probe(
        self, session: aiohttp.ClientSession, base_url: str, key: str | None, model_name: str, model_type: str, timeout: float
    ) -> ProbeResult:
        """Check the provider serves `model_name` and learn its context length or vector size."""
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        if model_type == "text-embeddings-inference":
            body = self.request_body(Endpoint.embeddings, {"model": model_name, "input": "tollgate probe"})
            answer = await self._call(session, "POST", self.url(base_url, Endpoint.embeddings), key, body, client_timeout)
            try:
                size = len(answer["data"][0]["embedding"])
            except (KeyError, IndexError, TypeError) as exc:
                raise UpstreamCheckError("the provider's embeddings answer has no vector") from exc
            # Its input limit, where the provider tells it: chunks are split to fit (api/rag/).
            try:
                limit = await self.input_limit(session, base_url, key, model_name, client_timeout)
            except UpstreamCheckError:
                limit = None
            return ProbeResult(vector_size=size, max_context_length=limit)
        limit = await self._listed_length(session, base_url, key, model_name, client_timeout)
        if limit is False:
            raise UpstreamCheckError(f"the provider does not serve a model named '{model_name}'")
        return ProbeResult(max_context_length=limit)

    async def input_limit(
        self, session: aiohttp.ClientSession, base_url: str, key: str | None, model_name: str, timeout: aiohttp.ClientTimeout
    ) -> int | None:
        """An embedding model's input limit in tokens, from the model list (vLLM's `max_model_len`)."""
        limit = await self._listed_length(session, base_url, key, model_name, timeout)
        return None if limit is False else limit

    async def _listed_length(
        self, session: aiohttp.ClientSession, base_url: str, key: str | None, model_name: str, timeout: aiohttp.ClientTimeout
    ) -> int | None | Literal[False]:
        """The model's context length from the model list; False when it is not listed."""
        answer = await self._call(session, "GET", self.url(base_url, Endpoint.models), key, None, timeout)
        models = answer.get("data") if isinstance(answer, dict) else None
        if not isinstance(models, list):
            raise UpstreamCheckError("the provider's model list is not an OpenAI model list")
        for model in models:
            if isinstance(model, dict) and model.get("id") == model_name:
                length = model.get("max_model_len") or model.get("max_context_length")
                return length if isinstance(length, int) and not isinstance(length, bool) and length > 0 else None
        return False

    async def _call(
        self, session: aiohttp.ClientSession, method: str, url: str, key: str | None, body: Any, timeout: aiohttp.ClientTimeout
    ) -> Any:
        try:
            async with session.request(method, url, json=body, headers=self.headers(key), timeout=timeout) as response:
                if response.status >= 400:
                    raise UpstreamCheckError(f"the provider answered {response.status} to {method} {url}")
                return await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise UpstreamCheckError(f"the provider is unreachable at {url}: {exc.__class__.__name__}") from exc
        except ValueError as exc:
            raise UpstreamCheckError(f"the provider's answer to {method} {url} is not JSON") from exc
