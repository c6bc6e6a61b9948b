"""Azure OpenAI: OpenAI's protocol on a deployment's paths
(`/openai/deployments/{deployment}/chat/completions?api-version=…`), keyed by `api-key`.

The provider's `model_name` is the deployment's name; its `api_version` (default below) goes
with every call. A deployment has no model list: it is checked by a call of the kind its router
serves (a one-token chat, an embedding, a transcription of silence).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp

from api.providers.base import Endpoint, ProbeResult, ProviderAdapter, Upstream, UpstreamCheckError

DEFAULT_API_VERSION = "2024-10-21"

_PATHS = {Endpoint.chat: "chat/completions", Endpoint.completions: "completions", Endpoint.embeddings: "embeddings", Endpoint.transcriptions: "audio/transcriptions"}


class AzureAdapter(ProviderAdapter):
    def __init__(self) -> None:
        super().__init__(bound_field="max_completion_tokens")

    def url(self, upstream: Upstream, endpoint: Endpoint, body: dict[str, Any] | None = None) -> str:
        path = _PATHS.get(endpoint, endpoint.value.removeprefix("/v1/"))
        version = upstream.api_version or DEFAULT_API_VERSION
        return f"{upstream.url}/openai/deployments/{quote(upstream.model_name, safe='')}/{path}?api-version={version}"

    def headers(self, key: str | None) -> dict[str, str]:
        return {"api-key": key} if key else {}

    async def probe(self, session: aiohttp.ClientSession, upstream: Upstream, model_type: str, timeout: float) -> ProbeResult:
        if model_type in ("text-generation", "image-text-to-text"):
            body = {"model": upstream.model_name, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
            answer = await self._send(session, Endpoint.chat, self.request(upstream, Endpoint.chat, body),
                                      aiohttp.ClientTimeout(total=timeout))
            if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
                raise UpstreamCheckError("the deployment's answer is not a chat completion")
            return ProbeResult()
        return await super().probe(session, upstream, model_type, timeout)
