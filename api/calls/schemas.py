"""Requests of the model endpoints. Only what Tollgate must understand is validated; every
other field passes through to the provider untouched."""

from __future__ import annotations

import re
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from api.common.schemas import StorableStr
from api.usage.tags import TAG_CHARACTERS, is_tag

ModelName = Annotated[StorableStr, Field(min_length=1, max_length=255)]


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def check_encodable(data: Any) -> Any:
    """Refuse unpaired surrogates (JSON's "\\ud800") anywhere in a body that goes upstream: it
    cannot be written as UTF-8, so forwarding it would fail."""
    try:
        orjson.dumps(data)  # in C: the whole body at once, and what is sent upstream is its like
        return data
    except orjson.JSONEncodeError:
        pass  # a surrogate, or something else orjson refuses (an integer past 64 bits): look
    # A loop, not recursion: the body's nesting is the client's choice.
    pending = [data]
    while pending:
        value = pending.pop()
        if isinstance(value, str):
            if _LONE_SURROGATE.search(value):
                raise ValueError("text must be valid Unicode: unpaired surrogates cannot be sent on")
        elif isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return data


class PassThroughModel(BaseModel):
    model_config = ConfigDict(extra="allow")


class UpstreamRequest(PassThroughModel):
    """A whole request body that is forwarded to a provider."""

    @model_validator(mode="before")
    @classmethod
    def _encodable(cls, data: Any) -> Any:
        return check_encodable(data)


class ChatMessage(PassThroughModel):
    role: Annotated[str, Field(min_length=1, max_length=64)]


class StreamOptions(PassThroughModel):
    include_usage: bool | None = None


class TaggedRequest(UpstreamRequest):
    """OpenAI's `user` (the caller's own end user) and `metadata` (up to 16 string pairs): both
    go upstream as sent; `user` is kept on the usage record, and `metadata.tag` is the call's
    tag when no `X-Tollgate-Tag` header gives one (docs/api.md)."""

    user: Annotated[StorableStr, Field(max_length=255)] | None = None
    metadata: Annotated[
        dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]], Field(max_length=16)
    ] | None = None

    @field_validator("metadata")
    @classmethod
    def _tag(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None and "tag" in value and not is_tag(value["tag"]):
            raise ValueError(f"metadata.tag must be 1 to 64 {TAG_CHARACTERS}")
        return value

    def tag(self, header: str | None) -> str | None:
        """The call's tag: the header's (already checked), else the body's."""
        if header is not None:
            return header
        return None if self.metadata is None else self.metadata.get("tag")


class ChatCompletionRequest(TaggedRequest):
    model: ModelName
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=10_000)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = None


class CompletionRequest(TaggedRequest):
    """A legacy completion: a prompt (a string, strings, or token ids) to continue."""

    model: ModelName
    prompt: str | Annotated[list[str], Field(max_length=2048)] | list[int] | Annotated[list[list[int]], Field(max_length=2048)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = None


# OpenAI's limit on inputs per request: a list is bounded so a 10 MB body of short strings
# cannot become 1,000,000 upstream embeddings in one call.
MAX_EMBEDDING_INPUTS = 2048
EmbeddingInput = (
    str
    | Annotated[list[str], Field(max_length=MAX_EMBEDDING_INPUTS)]
    | list[int]
    | Annotated[list[list[int]], Field(max_length=MAX_EMBEDDING_INPUTS)]
)


class EmbeddingsRequest(TaggedRequest):
    model: ModelName
    input: EmbeddingInput
    dimensions: Annotated[int, Field(ge=1)] | None = None
    encoding_format: str | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _not_too_many(cls, value: Any) -> Any:
        # Before the union, whose shapes would each report every item of a huge list. A list of
        # integers is one input (token ids), which the limit does not count.
        if isinstance(value, list) and len(value) > MAX_EMBEDDING_INPUTS and not isinstance(value[0], int):
            raise ValueError(f"at most {MAX_EMBEDDING_INPUTS} inputs per request")
        return value


class RerankRequest(TaggedRequest):
    model: ModelName
    query: Annotated[str, Field(min_length=1)]
    documents: Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1, max_length=10_000)]
    top_n: Annotated[int, Field(ge=1)] | None = None


def as_upstream_body(request: BaseModel) -> dict[str, Any]:
    """The body to send upstream: what the client sent (extras included), minus unset defaults."""
    return request.model_dump(exclude_unset=True)
