"""Hugging Face Text Embeddings Inference: OpenAI-style embeddings, its own rerank route."""

from __future__ import annotations

from typing import Any

import aiohttp

from api.providers.base import Endpoint, ProbeResult, ProviderAdapter, Upstream, UpstreamCheckError


class TeiAdapter(ProviderAdapter):
    serves_completions = False

    def url(self, upstream: Upstream, endpoint: Endpoint, body: dict[str, Any] | None = None) -> str:
        if endpoint is Endpoint.rerank:
            return upstream.url + "/rerank"
        return super().url(upstream, endpoint, body)

    def request_body(self, endpoint: Endpoint, body: dict[str, Any]) -> dict[str, Any]:
        if endpoint is Endpoint.rerank:
            return {"query": body["query"], "texts": body["documents"], "raw_scores": False}
        return body

    def response_body(self, endpoint: Endpoint, body: Any) -> Any:
        if endpoint is Endpoint.rerank and isinstance(body, list):
            # Entries of another shape are kept as they are: `well_formed` refuses them.
            results = [{"index": r.get("index"), "relevance_score": r.get("score")} if isinstance(r, dict) else r for r in body]
            return {"results": results}
        return body

    async def probe(self, session: aiohttp.ClientSession, upstream: Upstream, model_type: str, timeout: float) -> ProbeResult:
        if model_type == "text-classification":
            probe = self.request(upstream, Endpoint.rerank, {"query": "probe", "documents": ["probe"]})
            await self._send(session, Endpoint.rerank, probe, aiohttp.ClientTimeout(total=timeout))
            return ProbeResult()
        return await super().probe(session, upstream, model_type, timeout)

    async def input_limit(self, session: aiohttp.ClientSession, upstream: Upstream, timeout: aiohttp.ClientTimeout) -> int | None:
        """TEI says it in `GET /info` (`max_input_length`); it refuses longer inputs unless asked to truncate."""
        try:
            answer = await self._call(session, "GET", upstream.url + "/info", upstream.key, None, timeout)
        except UpstreamCheckError:  # a server that only speaks the OpenAI routes
            return await super().input_limit(session, upstream, timeout)
        length = answer.get("max_input_length") if isinstance(answer, dict) else None
        return length if isinstance(length, int) and not isinstance(length, bool) and length > 0 else None
