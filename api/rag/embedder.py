"""Embeddings for chunks and queries, through the gateway like any call: the caller's limits
and budget apply, and the usage is recorded and charged to them."""

from __future__ import annotations

from typing import Any

from api.calls.call import Call
from api.calls.operations import Embeddings, Rerank
from api.calls.pipeline import Pipeline
from api.errors import InvalidRequestError, UpstreamError
from api.identity.principal import Principal
from api.providers import Endpoint


class Embedder:
    def __init__(self, pipeline: Pipeline, model: str | None) -> None:
        self._pipeline = pipeline
        self.model = model

    def require(self) -> str:
        if self.model is None:
            raise InvalidRequestError("Documents and search are disabled: no vector_store_model is configured")
        return self.model

    async def embed(self, caller: Principal, texts: list[str]) -> tuple[list[list[float]], dict[str, Any]]:
        """One vector per text, in order, and the call's usage (tokens, cost, carbon)."""
        model = self.require()
        vectors: list[list[float]] = []

        def check(answer: dict[str, Any]) -> None:
            # Before the usage is recorded: an answer that cannot be used is recorded as the 502 it becomes.
            vectors.extend(_vectors(model, len(texts), answer))

        operation = Embeddings({"model": model, "input": texts}, check)
        call = await self._pipeline.run(Call(caller, model, operation, Endpoint.embeddings.value))
        return vectors, call.usage or {}

    async def rerank(self, caller: Principal, model: str, query: str, documents: list[str]) -> tuple[list[tuple[int, float]], dict[str, Any]]:
        """(index, score) of each document, best first, from a text-classification router."""
        operation = Rerank({"model": model, "query": query, "documents": documents})
        call = await self._pipeline.run(Call(caller, model, operation, Endpoint.rerank.value))
        answer = call.answer or {}
        ranked: list[tuple[int, float]] = []
        for item in answer.get("results") or []:
            if isinstance(item, dict) and isinstance(item.get("index"), int) and 0 <= item["index"] < len(documents):
                ranked.append((item["index"], float(item.get("relevance_score") or 0.0)))
        ranked.sort(key=lambda pair: -pair[1])
        return ranked, call.usage or {}


def _vectors(model: str, count: int, answer: dict[str, Any]) -> list[list[float]]:
    """The `count` vectors of an embeddings answer, in input order, or UpstreamError."""
    data = answer.get("data")
    if not isinstance(data, list) or len(data) != count:
        raise UpstreamError(f"Model '{model}' returned {len(data) if isinstance(data, list) else 'no'} vectors for {count} texts")
    ordered = sorted(data, key=lambda item: item.get("index", 0) if isinstance(item, dict) else 0)
    vectors = [item.get("embedding") if isinstance(item, dict) else None for item in ordered]
    if not all(isinstance(v, list) and v and all(isinstance(x, (int, float)) for x in v) for v in vectors):
        raise UpstreamError(f"Model '{model}' returned embeddings that are not lists of numbers")
    if len({len(v) for v in vectors}) != 1:  # type: ignore[arg-type]
        raise UpstreamError(f"Model '{model}' returned vectors of different sizes")
    return vectors  # type: ignore[return-value]


def add_usage(total: dict[str, Any], usage: dict[str, Any]) -> dict[str, Any]:
    """The sum of two `usage` objects (tokens, cost, carbon bounds, requests)."""
    merged = dict(total)
    for field in ("prompt_tokens", "completion_tokens", "total_tokens", "cost", "requests"):
        merged[field] = (total.get(field) or 0) + (usage.get(field) or 0)
    carbon = {unit: dict(bounds) for unit, bounds in (total.get("carbon") or {}).items()}
    for unit, bounds in (usage.get("carbon") or {}).items():
        for bound in ("min", "max"):
            carbon.setdefault(unit, {"min": 0.0, "max": 0.0})[bound] = carbon.get(unit, {}).get(bound, 0.0) + bounds.get(bound, 0.0)
    merged["carbon"] = carbon or {"kWh": {"min": 0.0, "max": 0.0}, "kgCO2eq": {"min": 0.0, "max": 0.0}}
    return merged


EMPTY_USAGE: dict[str, Any] = add_usage({}, {})
