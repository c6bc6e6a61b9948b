"""One adapter per upstream type. Each knows its paths, headers and payload quirks."""

from api.providers.base import Endpoint, ProbeResult, ProviderAdapter, Upstream, UpstreamCheckError, well_formed
from api.providers.registry import adapter_for

__all__ = ["Endpoint", "ProbeResult", "ProviderAdapter", "Upstream", "UpstreamCheckError", "adapter_for", "well_formed"]
