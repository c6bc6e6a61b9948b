"""Request and response bodies for routers and providers (OpenGateLLM shapes)."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, HttpUrl, field_validator, model_validator

from api.common.schemas import Id, ListPage, OpenRequestModel, RequestModel

Price = Annotated[Decimal, Field(ge=0, le=10**9, decimal_places=6, description="Per million tokens")]
HitPrice = Annotated[Decimal, Field(ge=0, le=10**6, decimal_places=6, description="Per call")]
CacheTtl = Annotated[int, Field(ge=1, le=30 * 86_400)]
Alias = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^\S+$")]


class ModelType(StrEnum):
    text_generation = "text-generation"
    text_embeddings_inference = "text-embeddings-inference"
    automatic_speech_recognition = "automatic-speech-recognition"
    text_classification = "text-classification"
    image_text_to_text = "image-text-to-text"
    image_to_text = "image-to-text"


class LoadBalancingStrategy(StrEnum):
    shuffle = "shuffle"
    least_busy = "least_busy"


class ProviderType(StrEnum):
    openai = "openai"
    vllm = "vllm"
    tei = "tei"
    mistral = "mistral"
    albert = "albert"
    anthropic = "anthropic"  # the Messages API
    bedrock = "bedrock"  # AWS Bedrock's Converse API, SigV4-signed
    azure = "azure"  # Azure OpenAI deployments


class QosMetric(StrEnum):
    """`inflight`: at most `qos_limit` calls at once on the provider (others wait for a slot).
    `ttft`: the provider is passed over while its observed time to first token is above
    `qos_limit` milliseconds and another provider of the router can take the call."""

    inflight = "inflight"
    ttft = "ttft"


def _unique_aliases(aliases: list[str] | None) -> list[str] | None:
    if aliases is not None and len(set(aliases)) != len(aliases):
        raise ValueError("aliases must be unique")
    return aliases


Aliases = Annotated[list[Alias], Field(max_length=32), AfterValidator(_unique_aliases)]
ModelName = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^\S+$")]


class RouterCreate(OpenRequestModel):
    name: ModelName
    type: ModelType
    aliases: Aliases = []
    load_balancing_strategy: LoadBalancingStrategy = LoadBalancingStrategy.shuffle
    cost_prompt_tokens: Price = Decimal(0)
    cost_completion_tokens: Price = Decimal(0)
    cache_ttl_seconds: CacheTtl | None = Field(None, description="Answer identical calls from a cache for this long (null: no cache).")
    cache_any_temperature: bool = Field(False, description="Cache calls with a temperature above 0 too (their answers vary).")
    cost_cache_hit: HitPrice = Field(Decimal(0), description="The price of a call answered from the cache.")


class RouterUpdate(OpenRequestModel):
    name: ModelName | None = None
    type: ModelType | None = None
    aliases: Aliases | None = None
    load_balancing_strategy: LoadBalancingStrategy | None = None
    cost_prompt_tokens: Price | None = None
    cost_completion_tokens: Price | None = None
    cache_ttl_seconds: CacheTtl | None = None
    cache_any_temperature: bool | None = None
    cost_cache_hit: HitPrice | None = None


class RouterOut(BaseModel):
    object: Literal["router"] = "router"
    id: int
    name: str
    type: ModelType
    aliases: list[str]
    load_balancing_strategy: LoadBalancingStrategy
    vector_size: int | None
    max_context_length: int | None
    cost_prompt_tokens: float
    cost_completion_tokens: float
    cache_ttl_seconds: int | None = None
    cache_any_temperature: bool = False
    cost_cache_hit: float = 0.0
    providers: int
    created: int
    updated: int


class RouterList(ListPage[RouterOut]):
    """OpenGateLLM's router list also says which page it is."""

    offset: int
    limit: int


def _base_url(url: HttpUrl) -> str:
    text = str(url).rstrip("/")
    if url.query or url.fragment:
        raise ValueError("the provider url must not carry a query or fragment")
    return text


ProviderUrl = Annotated[HttpUrl, Field(max_length=2048)]
Timeout = Annotated[int, Field(ge=1, le=3600)]
Params = Annotated[float, Field(ge=0, le=100_000, allow_inf_nan=False, description="Billions of parameters, fractions allowed (0.27 for 270M)")]
Zone = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
Region = Annotated[str, Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d+$", max_length=32)]
ApiVersion = Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}(-preview)?$", max_length=32)]
QosLimit = Annotated[float, Field(gt=0, le=1_000_000, description="inflight: calls at once; ttft: milliseconds.")]


class ProviderSeed(RequestModel):
    """A provider as written under a router in the `models:` section of config.yml."""

    type: ProviderType
    url: ProviderUrl
    key: Annotated[str, Field(min_length=1, max_length=2048)] | None = None
    timeout: Timeout = 300
    model_name: Annotated[str, Field(min_length=1, max_length=255)]
    model_hosting_zone: Zone = "WOR"
    model_total_params: Params = 0.0
    model_active_params: Params = 0.0
    qos_metric: QosMetric | None = None
    qos_limit: QosLimit | None = None
    region: Region | None = Field(None, description="bedrock: the AWS region (else read from a bedrock-runtime url).")
    api_version: ApiVersion | None = Field(None, description="azure: the api-version of its calls (default 2024-10-21).")

    @field_validator("url")
    @classmethod
    def _url(cls, url: HttpUrl) -> HttpUrl:
        _base_url(url)
        return url


# OpenGateLLM's request bodies name the router `router`, its answers `router_id`: either is
# accepted in a request, and naming it twice with two values is a 422, not a silent choice.
ROUTER_NAMES = AliasChoices("router", "router_id")


def _one_router(data: Any) -> Any:
    if isinstance(data, dict) and "router" in data and "router_id" in data and data["router"] != data["router_id"]:
        raise ValueError("router and router_id name the same router: give one, or the same value")
    return data


class ProviderCreate(ProviderSeed):
    model_config = ConfigDict(extra="ignore")  # the reference allows extra fields; config.yml does not
    router: Id = Field(validation_alias=ROUTER_NAMES)

    @model_validator(mode="before")
    @classmethod
    def _router_once(cls, data: Any) -> Any:
        return _one_router(data)


class ProviderUpdate(OpenRequestModel):
    router: Id | None = Field(None, validation_alias=ROUTER_NAMES)
    timeout: Timeout | None = None
    key: Annotated[str, Field(min_length=1, max_length=2048)] | None = None
    model_hosting_zone: Zone | None = None
    model_total_params: Params | None = None
    model_active_params: Params | None = None
    qos_metric: QosMetric | None = None
    qos_limit: QosLimit | None = None
    region: Region | None = None
    api_version: ApiVersion | None = None

    @model_validator(mode="before")
    @classmethod
    def _router_once(cls, data: Any) -> Any:
        return _one_router(data)


class ProviderOut(BaseModel):
    object: Literal["provider"] = "provider"
    id: int
    router_id: int = Field(description="The provider's router, as OpenGateLLM names it.")
    router: int = Field(description="The same router id, under the name Tollgate first used.")
    user_id: int | None
    type: ProviderType
    url: str
    key: str | None = Field(description="Masked: the key itself is never returned.")
    timeout: int
    model_name: str
    model_hosting_zone: str
    model_total_params: float
    model_active_params: float
    qos_metric: QosMetric | None
    qos_limit: float | None
    vector_size: int | None
    max_context_length: int | None
    region: str | None = None
    api_version: str | None = None
    created: int
    updated: int


class ModelCosts(BaseModel):
    prompt_tokens: float
    completion_tokens: float


class ModelOut(BaseModel):
    object: Literal["model"] = "model"
    id: str
    type: ModelType
    aliases: list[str]
    created: int
    owned_by: str
    max_context_length: int | None
    costs: ModelCosts


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelOut]


class ProviderHealth(BaseModel):
    id: int
    healthy: bool | None = Field(description="The last health check's verdict in this process; null before the first.")
    cooling: bool = Field(description="Cooled down after a failure (tried last), as every replica sees it.")
    checked_at: int | None
    latency_ms: int | None
    error: str | None


class ModelHealth(BaseModel):
    id: int
    name: str
    type: ModelType
    healthy_providers: int = Field(description="Providers neither failing their check nor cooling down.")
    providers: list[ProviderHealth]


class ModelHealthList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelHealth]
    total: int


class ModelsConfigEntry(RouterCreate):
    """One router of the `models:` section of config.yml, with its providers."""

    model_config = ConfigDict(extra="forbid")  # a typo in the config file fails the start

    providers: list[ProviderSeed] = Field(min_length=1)
