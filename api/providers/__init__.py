"""One adapter per upstream type. Each knows its paths, headers and payload quirks."""

from api.providers.base import Endpoint, ProbeResult, ProviderAdapter, Upstream, UpstreamCheckError, well_formed
from api.providers.registry import ProviderAdapters, build_adapters, serves_completions

__all__ = ["Endpoint", "ProbeResult", "ProviderAdapter", "Upstream", "ProviderAdapters", "UpstreamCheckError", "build_adapters", "serves_completions",
           "well_formed"]
