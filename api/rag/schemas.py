"""Collections, documents, chunks and search: OpenGateLLM's shapes."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal, Union

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator

from api.calls.schemas import ModelName, UpstreamRequest
from api.common.schemas import Id, Name, OpenRequestModel, RequestModel, Timestamp

MetadataKey = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]
MetadataValue = str | int | float | bool | None
Metadata = dict[MetadataKey, MetadataValue]
MAX_METADATA_KEYS = 64


def check_metadata(metadata: dict[str, Any] | None) -> dict[str, Any] | None:
    if metadata is None:
        return None
    if len(metadata) > MAX_METADATA_KEYS:
        raise ValueError(f"at most {MAX_METADATA_KEYS} metadata keys")
    for key, value in metadata.items():
        if isinstance(value, str) and len(value) > 10_000:
            raise ValueError(f"metadata '{key}': over 10,000 characters")
    return metadata


class Visibility(StrEnum):
    private = "private"
    public = "public"


class CollectionCreate(OpenRequestModel):
    name: Name
    description: Annotated[str, Field(max_length=1000)] | None = None
    visibility: Visibility = Visibility.private


class CollectionUpdate(OpenRequestModel):
    name: Name | None = None
    description: Annotated[str, Field(max_length=1000)] | None = None
    visibility: Visibility | None = None


class CollectionOut(BaseModel):
    object: Literal["collection"] = "collection"
    id: int
    name: str
    owner: str
    description: str | None
    visibility: Visibility
    created: Timestamp
    updated: Timestamp
    documents: int


class DocumentStatus(StrEnum):
    processing = "processing"
    ready = "ready"
    failed = "failed"


class DocumentOut(BaseModel):
    object: Literal["document"] = "document"
    id: int
    name: str
    collection_id: int
    created: Timestamp
    chunks: int
    status: DocumentStatus
    error: str | None = None
    pages: int | None = None
    progress: float = Field(description="Share of the document's chunks embedded so far, 0 to 1.")


class ChunkIn(RequestModel):
    content: Annotated[str, Field(min_length=1, max_length=100_000)]
    metadata: Metadata | None = None

    _metadata = field_validator("metadata")(check_metadata)


class ChunksCreate(OpenRequestModel):
    chunks: Annotated[list[ChunkIn], Field(min_length=1, max_length=64)]


class ChunksCreated(BaseModel):
    ids: list[int]


class ChunkOut(BaseModel):
    object: Literal["chunk"] = "chunk"
    id: int
    collection_id: int
    document_id: int
    content: str
    metadata: dict[str, Any]
    created: Timestamp


class ComparisonType(StrEnum):
    eq = "eq"
    sw = "sw"  # starts with
    ew = "ew"  # ends with
    co = "co"  # contains


# Qdrant's integers are 64-bit: a bigger one would fail in the vector store, not here.
FilterInt = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]


class ComparisonFilter(RequestModel):
    key: MetadataKey
    type: ComparisonType
    value: str | FilterInt | float | bool

    @field_validator("value")
    @classmethod
    def _text_for_text_matches(cls, value: Any, info: Any) -> Any:
        if info.data.get("type") in (ComparisonType.sw, ComparisonType.ew, ComparisonType.co) and not isinstance(value, str):
            raise ValueError("sw, ew and co compare text: give a string value")
        if isinstance(value, str) and not value:
            raise ValueError("an empty value matches everything: leave the filter out")
        return value


class CompoundType(StrEnum):
    and_ = "and"
    or_ = "or"


class CompoundFilter(RequestModel):
    type: CompoundType
    # Union, not `|`: the class refers to itself, and `|` cannot take a name not yet defined.
    filters: Annotated[list[Union[ComparisonFilter, CompoundFilter]], Field(min_length=1, max_length=32)]  # noqa: UP007


MetadataFilter = ComparisonFilter | CompoundFilter


class SearchMethod(StrEnum):
    semantic = "semantic"
    lexical = "lexical"
    hybrid = "hybrid"


class FusionMethod(StrEnum):
    rrf = "rrf"  # weighted reciprocal rank fusion: ranks only
    dbsf = "dbsf"  # distribution-based score fusion: each ranking's scores, normalised


Weight = Annotated[float, Field(ge=0, le=100)]


class HybridWeights(RequestModel):
    """How much each ranking counts in a hybrid search (only their ratio matters)."""

    semantic: Weight = 0.7
    lexical: Weight = 0.3

    @field_validator("lexical")
    @classmethod
    def _not_both_zero(cls, value: float, info: Any) -> float:
        if value == 0 and info.data.get("semantic") == 0:
            raise ValueError("at least one weight must be above 0")
        return value


class SearchArgs(RequestModel):
    """What to search; shared by POST /v1/search and chat with search."""

    collection_ids: Annotated[list[Id], Field(max_length=100)] = []
    document_ids: Annotated[list[Id], Field(max_length=100)] = []
    metadata_filters: MetadataFilter | None = None
    limit: Annotated[int, Field(gt=0, le=100)] = 10
    offset: Annotated[int, Field(ge=0, le=10_000)] = 0
    method: SearchMethod = SearchMethod.semantic
    # OpenGateLLM spells it rff_k; both are accepted.
    rrf_k: Annotated[int, Field(ge=0, le=16_384, validation_alias=AliasChoices("rrf_k", "rff_k"))] = 60
    score_threshold: Annotated[float, Field(ge=0, le=1)] = 0.0
    # Tollgate's own (OpenGateLLM has neither): how hybrid search fuses its two rankings, and
    # a cap on the chunks of any one document among the results.
    fusion: FusionMethod = Field(default=FusionMethod.dbsf, description="Hybrid search's fusion: dbsf (the default) or rrf (uses rrf_k).")
    weights: HybridWeights = Field(default_factory=HybridWeights, description="Hybrid search's weight of each ranking.")
    max_chunks_per_document: Annotated[int, Field(ge=1, le=100)] | None = Field(
        default=None, description="At most this many chunks of any one document among the results."
    )
    rerank_model: Annotated[str, Field(min_length=1, max_length=255)] | None = Field(
        default=None, description="A text-classification router that re-orders the candidates."
    )


class SearchRequest(SearchArgs):
    model_config = ConfigDict(extra="ignore")  # as OpenGateLLM's; search_args in a chat stays strict
    query: Annotated[str, Field(min_length=1, max_length=20_000)]


class SearchResult(BaseModel):
    method: SearchMethod
    score: float
    chunk: ChunkOut


class SearchResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[SearchResult]
    usage: dict[str, Any]


CompoundFilter.model_rebuild()


class OcrDocument(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["document_url", "image_url"]
    document_url: Annotated[str, Field(max_length=200_000_000)] | None = None
    image_url: Annotated[str, Field(max_length=200_000_000)] | dict[str, Any] | None = None
    document_name: Annotated[str, Field(max_length=255)] | None = None


class OcrRequest(UpstreamRequest):
    """Mistral's OCR request; fields Tollgate does not use pass through to the provider. Its
    model name is checked as every model endpoint's is: a name that cannot be stored (a NUL)
    is a 422 before anything is recorded."""

    model: ModelName | None = None
    document: OcrDocument
    pages: Annotated[list[Annotated[int, Field(ge=0, le=100_000)]], Field(max_length=1000)] | None = None
