"""Which adapter serves which provider type."""

from __future__ import annotations

from api.providers.anthropic import AnthropicAdapter
from api.providers.azure import AzureAdapter
from api.providers.base import ProviderAdapter
from api.providers.bedrock import BedrockAdapter
from api.providers.tei import TeiAdapter

_OPENAI_COMPATIBLE = ProviderAdapter()
_ADAPTERS: dict[str, ProviderAdapter] = {
    "openai": ProviderAdapter(bound_field="max_completion_tokens"),
    "vllm": ProviderAdapter(tokenize=True),
    "mistral": _OPENAI_COMPATIBLE,
    "albert": _OPENAI_COMPATIBLE,
    "tei": TeiAdapter(),
    "anthropic": AnthropicAdapter(),
    "azure": AzureAdapter(),
    "bedrock": BedrockAdapter(),
}


def adapter_for(provider_type: str) -> ProviderAdapter:
    return _ADAPTERS[provider_type]
