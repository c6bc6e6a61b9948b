"""Which adapter serves which provider type."""

from __future__ import annotations

from api.providers.base import ProviderAdapter
from api.providers.tei import TeiAdapter

_OPENAI_COMPATIBLE = ProviderAdapter()
_ADAPTERS: dict[str, ProviderAdapter] = {
    "openai": _OPENAI_COMPATIBLE,
    "vllm": _OPENAI_COMPATIBLE,
    "mistral": _OPENAI_COMPATIBLE,
    "albert": _OPENAI_COMPATIBLE,
    "tei": TeiAdapter(),
}


def adapter_for(provider_type: str) -> ProviderAdapter:
    return _ADAPTERS[provider_type]
