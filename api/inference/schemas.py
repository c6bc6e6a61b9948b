"""Requests of the model endpoints. Only what Tollgate must understand is validated; every
other field passes through to the provider untouched."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from api.common.schemas import StorableStr

ModelName = Annotated[StorableStr, Field(min_length=1, max_length=255)]


class PassThroughModel(BaseModel):
    model_config = ConfigDict(extra="allow")


class ChatMessage(PassThroughModel):
    role: Annotated[str, Field(min_length=1, max_length=64)]


class StreamOptions(PassThroughModel):
    include_usage: bool | None = None


class ChatCompletionRequest(PassThroughModel):
    model: ModelName
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=10_000)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = None


EmbeddingInput = str | list[str] | list[int] | list[list[int]]


class EmbeddingsRequest(PassThroughModel):
    model: ModelName
    input: EmbeddingInput
    dimensions: Annotated[int, Field(ge=1)] | None = None
    encoding_format: str | None = None


class RerankRequest(PassThroughModel):
    model: ModelName
    query: Annotated[str, Field(min_length=1)]
    documents: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1, max_length=10_000)]
    top_n: Annotated[int, Field(ge=1)] | None = None


def as_upstream_body(request: BaseModel) -> dict[str, Any]:
    """The body to send upstream: what the client sent (extras included), minus unset defaults."""
    return request.model_dump(exclude_unset=True)
