"""What a provider answered, and how a failed call is classified: complete answers, open
streams, the failures that fail over (`Retryable`), and the 4xx the client gets as it is."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, UTC
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

from api.catalog.catalog import ProviderTarget
from api.providers.base import ProviderAdapter, StreamTranslator
from api.state.load import Lease


@dataclass
class UpstreamAnswer:
    """A provider's complete (non-streamed) answer."""

    status: int
    body: Any  # parsed JSON
    provider: ProviderTarget
    raw: bytes | None = None  # an answer that is not JSON (a transcript as text, SRT or WebVTT)...
    content_type: str | None = None  # ...and the provider's content type for it


@dataclass
class OpenStream:
    """A streamed answer whose first bytes (`first`) arrived after 2xx headers: from here on
    there is no failover. The relay reads at most `max_bytes` of it, until `deadline`
    (time.monotonic())."""

    response: aiohttp.ClientResponse
    provider: ProviderTarget
    lease: Lease
    deadline: float
    max_bytes: int
    first: bytes
    session: aiohttp.ClientSession  # the provider's: what else the relay asks of it (a prompt's count)...
    adapter: ProviderAdapter  # ...in the provider's own terms
    translator: StreamTranslator | None = None  # the provider's own events to OpenAI's chunks


# A provider's Retry-After lengthens its cooldown, within reason: a provider asking for a day
# off should not take itself out of rotation for a day on one answer.
MAX_HONOURED_RETRY_AFTER = 300.0


class Retryable(Exception):
    def __init__(self, kind: str, detail: str, retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.kind = kind  # "timeout" | "unreachable" | "status" | "rate_limited" | "invalid"
        self.detail = detail
        self.retry_after = retry_after  # seconds, from a 429's Retry-After


# Longest Retry-After taken from a provider: it is untrusted, and a 400-digit one is no number.
MAX_RETRY_AFTER = 86_400.0


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds from now (at most a day): delta-seconds or an HTTP date; None if
    absent or invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        digits = value.lstrip("0") or "0"
        return MAX_RETRY_AFTER if len(digits) > 5 else min(float(digits), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return min(max(0.0, (when - datetime.now(UTC)).total_seconds()), MAX_RETRY_AFTER)


def transport_failure(provider: ProviderTarget, error: Exception) -> Retryable:
    if isinstance(error, TimeoutError):  # aiohttp's own timeouts are TimeoutErrors too
        return Retryable("timeout", f"provider {provider.id} timed out after {provider.timeout}s")
    return Retryable("unreachable", f"provider {provider.id} is unreachable ({error.__class__.__name__})")


def status_failure(provider: ProviderTarget, response: aiohttp.ClientResponse) -> Retryable:
    if response.status == 429:
        return Retryable("rate_limited", f"provider {provider.id} is rate-limited (429)",
                          parse_retry_after(response.headers.get("Retry-After")))
    return Retryable("status", f"provider {provider.id} answered {response.status}")
