"""Which adapter serves which provider type. Each app builds its own (`build_adapters`, held by
its `UpstreamSessions`): the Bedrock adapter keeps the AWS credentials it resolved, which must
not pass from one app to another."""

from __future__ import annotations

from api.providers.anthropic import AnthropicAdapter
from api.providers.azure import AzureAdapter
from api.providers.base import ProviderAdapter
from api.providers.bedrock import BedrockAdapter
from api.providers.tei import TeiAdapter

ProviderAdapters = dict[str, ProviderAdapter]  # by provider type


def build_adapters() -> ProviderAdapters:
    openai_compatible = ProviderAdapter()
    return {
        "openai": ProviderAdapter(bound_field="max_completion_tokens"),
        "vllm": ProviderAdapter(tokenize=True),
        "mistral": openai_compatible,
        "albert": openai_compatible,
        "tei": TeiAdapter(),
        "anthropic": AnthropicAdapter(),
        "azure": AzureAdapter(),
        "bedrock": BedrockAdapter(),
    }


_WITHOUT_COMPLETIONS = frozenset(t for t, adapter in build_adapters().items() if not adapter.serves_completions)


def serves_completions(provider_type: str) -> bool:
    """Whether the type's providers answer the legacy /v1/completions (a fixed trait of the type)."""
    return provider_type not in _WITHOUT_COMPLETIONS
