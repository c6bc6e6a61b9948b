"""Embeddings for chunks and queries, through the gateway like any call: the caller's limits
and budget apply, and the usage is recorded and charged to them."""

from __future__ import annotations

from typing import Any

from api.calls.call import Call
from api.calls.operations import Embeddings, Rerank
from api.calls.pipeline import Pipeline
from api.calls.tokens import count_text
from api.catalog.catalog import ModelCatalog
from api.errors import InvalidRequestError, UpstreamError
from api.identity.principal import Principal
from api.providers import Endpoint


SPLIT_SHARE = 0.75  # chunks are cut to this share of the limit, in cl100k tokens: a BERT-style tokenizer counts up to ~1.3x more


class Embedder:
    def __init__(self, pipeline: Pipeline, model: str | None, catalog: ModelCatalog | None = None) -> None:
        self._pipeline = pipeline
        self._catalog = catalog
        self.model = model

    def input_limit(self) -> int | None:
        """The embedding model's input limit in tokens, as its providers told it (the least of
        theirs); None when none did."""
        entry = self._catalog.resolve(self.model) if self._catalog is not None and self.model else None
        return entry.max_context_length if entry is not None else None

    def chunk_tokens(self) -> int | None:
        """How many tokens (estimated) a chunk may hold to be read whole by the model."""
        limit = self.input_limit()
        return max(1, int(limit * SPLIT_SHARE)) if limit else None

    def check_lengths(self, texts: list[str], what: str = "Text") -> None:
        """Refuse, before any call, a text longer than the model reads: it would be refused, or
        worse truncated without a word, by the provider."""
        limit = self.input_limit()
        if limit is None:
            return
        for number, text in enumerate(texts, start=1):
            tokens = count_text(text)
            if tokens > limit:
                name = what if len(texts) == 1 else f"{what} {number}"
                raise InvalidRequestError(
                    f"{name} is about {tokens} tokens long; the embedding model '{self.model}' reads at most {limit}: "
                    "split it into shorter pieces"
                )

    def require(self) -> str:
        if self.model is None:
            raise InvalidRequestError("Documents and search are disabled: no vector_store_model is configured")
        return self.model

    async def embed(self, caller: Principal, texts: list[str]) -> tuple[list[list[float]], dict[str, Any]]:
        """One vector per text, in order, and the call's usage (tokens, cost, carbon)."""
        model = self.require()
        self.check_lengths(texts)
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
