"""Routing a call to a provider: pick, admit, call, fail over, cool down.

A provider is tried at most once per request. Failover happens on a connection error, a
timeout, a 5xx or 429, or an unreadable answer — always before the first byte reaches the
client (a stream's first bytes are awaited before its headers go out, so a provider that
breaks or stays silent before them is replaced too). Upstream 4xx answers are the client's to see and pass through unchanged, but a 429
is the provider's own rate limit: another provider may take the call, and when every one
tried answered 429 the client gets 429 with the soonest `Retry-After`.

Answers are read up to `max_response_bytes` (streams also for `max_stream_seconds`), so a
provider that sends too much or never stops cannot exhaust memory or hold a slot forever.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import aiohttp

from api.common import jsonutil
from api.errors import (
    ServiceUnavailableError,
    TooManyRequestsError,
    UpstreamError,
    UpstreamRejectedError,
    UpstreamTimeoutError,
)
from api.identity.principal import Principal
from api.observability.metrics import GatewayMetrics
from api.catalog.catalog import ModelCatalog, ProviderTarget, RouterEntry, no_provider
from api.providers import Endpoint, well_formed
from api.providers.base import StreamTranslator
from api.providers.sessions import UpstreamSessions
from api.settings import GatewaySettings
from api.state.load import Lease, LoadTracker
from api.state.traffic import ProviderTraffic
from api.state.ttft import TtftTracker
from api.calls.qos import PriorityGate, inflight_cap, too_slow, watches_ttft
from api.calls.access import may_call
from api.calls.answers import (
    MAX_HONOURED_RETRY_AFTER,
    OpenStream,
    Retryable,
    UpstreamAnswer,
    status_failure,
    transport_failure,
)

# Which router types may serve which endpoint.
ENDPOINT_TYPES: dict[Endpoint, frozenset[str]] = {
    Endpoint.chat: frozenset({"text-generation", "image-text-to-text"}),
    Endpoint.completions: frozenset({"text-generation"}),
    Endpoint.embeddings: frozenset({"text-embeddings-inference"}),
    Endpoint.rerank: frozenset({"text-classification"}),
    Endpoint.transcriptions: frozenset({"automatic-speech-recognition"}),
    # A Mistral-style OCR model, or a vision chat model prompted page by page.
    Endpoint.ocr: frozenset({"image-to-text", "image-text-to-text"}),
}


class Attempts(Protocol):
    """What the gateway reads and writes of the call it forwards (`api.calls.call.Call`): the
    router to try, then the provider of the last attempt and the time spent waiting on it."""

    router: RouterEntry | None
    provider: ProviderTarget | None
    upstream_seconds: float
    first_byte_at: float | None


class Gateway:
    def __init__(
        self,
        catalog: ModelCatalog,
        tracker: LoadTracker,
        upstreams: UpstreamSessions,
        settings: GatewaySettings,
        metrics: GatewayMetrics,
        ttft: TtftTracker,
    ) -> None:
        self.catalog = catalog
        self._metrics = metrics
        self._tracker = tracker
        self._ttft = ttft
        self._upstreams = upstreams
        self._settings = settings
        self._gates: dict[int, PriorityGate] = {}
        self.traffic = ProviderTraffic()  # real calls, which the health checks count as health

    # resolution and access

    def visible_routers(self, principal: Principal) -> list[RouterEntry]:
        return [r for r in self.catalog.routers() if r.servable and may_call(self.catalog, principal, r)]

    # provider choice

    async def _candidates(self, router: RouterEntry) -> list[ProviderTarget]:
        """Providers in the order to try them: healthy ones by strategy, then those slower than
        their time-to-first-token limit (the least slow first), cooling ones last."""
        providers = list(router.providers)
        if not providers:
            raise no_provider(router)
        if len(providers) == 1:
            return providers  # cooling or busy, it is the one to try: nothing to look up
        cooling = await self._tracker.cooling(p.id for p in providers)
        if router.load_balancing_strategy == "least_busy":
            counts = await self._tracker.in_flight(p.id for p in providers)
            random.shuffle(providers)  # ties are broken at random, not by id
            providers.sort(key=lambda p: counts.get(p.id, 0))
        else:
            random.shuffle(providers)
        slow = await too_slow(self._ttft, providers)
        healthy = [p for p in providers if p.id not in cooling and p.id not in slow]
        lagging = sorted((p for p in providers if p.id in slow and p.id not in cooling), key=lambda p: slow[p.id])
        return healthy + lagging + [p for p in providers if p.id in cooling]

    async def _observe_ttft(self, provider: ProviderTarget, seconds: float) -> None:
        if watches_ttft(provider):
            await self._ttft.observe(provider.id, seconds * 1000)

    def _lease_seconds(self, provider: ProviderTarget) -> float:
        return provider.timeout + 60.0

    async def _admit(self, router: RouterEntry, provider: ProviderTarget) -> Lease | None:
        cap = inflight_cap(provider)
        if cap is None and router.load_balancing_strategy != "least_busy":
            # Nobody reads this provider's shared in-flight count (no cap, no least_busy):
            # spare the round trips; the process-local gauge still counts it.
            lease: Lease | None = Lease(provider.id, None)
        else:
            lease = await self._tracker.acquire(provider.id, cap, self._lease_seconds(provider))
        if lease is not None:
            self._metrics.records.provider_started(provider.id)
            self.traffic.started(provider.id)
        return lease

    async def _wait_for_slot(self, router: RouterEntry, tried: set[int], priority: int) -> tuple[ProviderTarget, Lease]:
        """Every untried provider is at its cap: wait, highest priority first, for a free slot."""
        gate = self._gates.setdefault(router.id, PriorityGate())
        entry = gate.enqueue(priority)
        deadline = time.monotonic() + self._settings.qos_wait_seconds
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._metrics.rejections.labels("capacity").inc()
                    raise ServiceUnavailableError(
                        f"Model '{router.name}' is at capacity; retry shortly",
                        retry_after=max(1, int(self._settings.qos_wait_seconds)),
                    )
                if gate.is_first(entry):
                    for provider in await self._candidates(router):
                        if provider.id in tried:
                            continue
                        lease = await self._admit(router, provider)
                        if lease is not None:
                            return provider, lease
                # Slots free up in this process or in another replica: poll.
                await asyncio.sleep(min(self._settings.qos_poll_seconds, max(remaining, 0)))
        finally:
            gate.leave(entry)

    async def _next_attempt(
        self, router: RouterEntry, tried: set[int], priority: int
    ) -> tuple[ProviderTarget, Lease] | None:
        """The next (provider, lease) to try, waiting when every untried provider is full; None
        once `max_attempts` were made or every provider was tried. `tried` is the caller's, one
        per call: each attempt adds its provider to it."""
        if len(tried) >= min(self._settings.max_attempts, len(router.providers)):
            return None
        chosen: tuple[ProviderTarget, Lease] | None = None
        gate = self._gates.get(router.id)
        if gate is not None and gate.busy and not tried:
            # Others are already waiting for this router: queue behind them, no barging.
            chosen = await self._wait_for_slot(router, tried, priority)
        for provider in [] if chosen else await self._candidates(router):
            if provider.id in tried:
                continue
            lease = await self._admit(router, provider)
            if lease is not None:
                chosen = (provider, lease)
                break
        if chosen is None:
            if len(tried) == len(router.providers):
                return None
            chosen = await self._wait_for_slot(router, tried, priority)
        tried.add(chosen[0].id)
        return chosen

    async def release(self, lease: Lease) -> None:
        self._metrics.records.provider_ended(lease.provider_id)
        self.traffic.ended(lease.provider_id)
        await self._tracker.release(lease)

    async def _failed(self, provider: ProviderTarget, error: Retryable) -> None:
        self._metrics.upstream_errors.labels(str(provider.id), error.kind).inc()
        seconds = self._settings.cooldown_seconds
        if error.retry_after is not None:  # the provider said when it can take calls again
            seconds = max(seconds, min(error.retry_after, MAX_HONOURED_RETRY_AFTER))
        await self._tracker.cool_down(provider.id, seconds)

    # calls

    def _request_args(self, provider: ProviderTarget, endpoint: Endpoint, body: dict[str, Any]) -> dict[str, Any]:
        wire = self._upstreams.adapter_for(provider.type).request(provider.upstream, endpoint, {**body, "model": provider.model_name})
        return {"url": wire.address, "data": wire.data, "headers": wire.headers}

    async def call_json(self, call: Attempts, endpoint: Endpoint, body: dict[str, Any], priority: int) -> UpstreamAnswer:
        """Send a JSON request, failing over as needed, and return the provider's parsed answer."""
        return await self._with_failover(
            call, priority, lambda provider: self._send(call, provider, self._request_args(provider, endpoint, body), endpoint)
        )

    async def call_multipart(
        self, call: Attempts, endpoint: Endpoint, build_form: Callable[[str], aiohttp.FormData], priority: int
    ) -> UpstreamAnswer:
        def send(provider: ProviderTarget) -> Awaitable[UpstreamAnswer]:
            adapter = self._upstreams.adapter_for(provider.type)
            args = {"url": adapter.url(provider.upstream, endpoint), "data": build_form(provider.model_name),
                    "headers": adapter.headers(provider.key)}
            return self._send(call, provider, args, endpoint)

        return await self._with_failover(call, priority, send)

    async def _with_failover(
        self, call: Attempts, priority: int, send: Callable[[ProviderTarget], Awaitable[UpstreamAnswer]]
    ) -> UpstreamAnswer:
        assert call.router is not None
        failures: list[Retryable] = []
        tried: set[int] = set()
        while (attempt := await self._next_attempt(call.router, tried, priority)) is not None:
            provider, lease = attempt
            call.provider = provider
            try:
                return await send(provider)
            except Retryable as error:
                failures.append(error)
                await self._failed(provider, error)
            finally:
                await self.release(lease)
        raise self._exhausted(call.router, failures)

    async def _send(self, call: Attempts, provider: ProviderTarget, args: dict[str, Any], endpoint: Endpoint) -> UpstreamAnswer:
        session = self._upstreams.for_url(provider.url)
        started = time.perf_counter()
        try:
            async with session.post(**args, timeout=aiohttp.ClientTimeout(total=provider.timeout)) as response:
                # Its headers: a provider that does not stream sends them with its whole answer.
                first_byte_seconds = time.perf_counter() - started
                if response.status >= 500 or response.status == 429:
                    raise status_failure(provider, response)
                raw = await self._read_bounded(response, provider)
                status = response.status
                content_type = response.content_type
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise transport_failure(provider, exc) from exc
        finally:
            call.upstream_seconds += time.perf_counter() - started
        call.first_byte_at = time.perf_counter()
        if endpoint is Endpoint.transcriptions and status < 400 and "json" not in content_type:
            # A transcript in the format asked for (text, srt, vtt): passed on as it came.
            await self._observe_ttft(provider, first_byte_seconds)
            self.traffic.answered(provider.id)
            return UpstreamAnswer(status, None, provider, raw=raw, content_type=response.headers.get("Content-Type", content_type))
        try:
            parsed = jsonutil.loads(raw) if raw else None
        except ValueError as exc:
            raise Retryable("invalid", f"provider {provider.id} answered with invalid JSON") from exc
        adapter = self._upstreams.adapter_for(provider.type)
        if status >= 400:
            raise UpstreamRejectedError(status, adapter.error_body(status, parsed))
        answer = adapter.response_body(endpoint, parsed)
        if not well_formed(endpoint, answer):  # like invalid JSON: another provider may do better
            raise Retryable("invalid", f"provider {provider.id} answered in an unexpected shape")
        await self._observe_ttft(provider, first_byte_seconds)
        self.traffic.answered(provider.id)
        return UpstreamAnswer(status, answer, provider)

    async def _read_bounded(self, response: aiohttp.ClientResponse, provider: ProviderTarget) -> bytes:
        """The whole body, or UpstreamError once it passes `max_response_bytes` (read no further).
        No failover and no cooldown: the provider is not broken, and the same request would
        get an answer as large from any other."""
        limit = self._settings.max_response_bytes
        declared = response.content_length  # before decompression: a lower bound of the size
        if declared is not None and declared <= limit and "Content-Encoding" not in response.headers:
            return await response.read()  # the declared length is all aiohttp will read
        if declared is None or declared <= limit:
            body = bytearray()
            async for block in response.content.iter_chunked(64 * 1024):
                body += block
                if len(body) > limit:
                    break
            else:
                return bytes(body)
        response.close()  # the rest is never read: the connection cannot be reused
        self._metrics.upstream_errors.labels(str(provider.id), "too_large").inc()
        raise UpstreamError(f"provider {provider.id}'s answer is larger than {limit} bytes")

    @staticmethod
    async def _first_block(
        response: aiohttp.ClientResponse, provider: ProviderTarget, translator: StreamTranslator | None
    ) -> bytes:
        """A stream's first bytes (translated to OpenAI's chunks, for a provider that streams
        its own events). Providers send their headers at once and their first event after the
        prompt is processed: a crash or a stall in between can still fail over."""
        while True:
            first = await response.content.readany()
            if not first:
                raise Retryable("invalid", f"provider {provider.id} ended its stream before its first event")
            if translator is None:
                return first
            translated = translator.feed(first)
            if translated:
                return translated

    async def open_stream(
        self, call: Attempts, body: dict[str, Any], priority: int, endpoint: Endpoint = Endpoint.chat
    ) -> OpenStream:
        """Open a streamed (chat) completion: failover until a provider answers 2xx headers and
        its first bytes."""
        assert call.router is not None
        failures: list[Retryable] = []
        tried: set[int] = set()
        while (attempt := await self._next_attempt(call.router, tried, priority)) is not None:
            provider, lease = attempt
            call.provider = provider
            session = self._upstreams.for_url(provider.url)
            adapter = self._upstreams.adapter_for(provider.type)
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=min(provider.timeout, 30), sock_read=provider.timeout)
            started = time.perf_counter()
            response: aiohttp.ClientResponse | None = None
            try:
                response = await session.post(**self._request_args(provider, endpoint, body), timeout=timeout)
                if response.status >= 500 or response.status == 429:
                    raise status_failure(provider, response)
                if response.status >= 400:
                    raw = await self._read_bounded(response, provider)
                    try:
                        parsed = jsonutil.loads(raw) if raw else None
                    except ValueError:
                        parsed = {"error": {"message": raw.decode(errors="replace")[:2000]}}
                    raise UpstreamRejectedError(response.status, adapter.error_body(response.status, parsed))
                translator = adapter.stream_translator(body)
                first = await self._first_block(response, provider, translator)
                call.upstream_seconds += time.perf_counter() - started
                call.first_byte_at = time.perf_counter()
                await self._observe_ttft(provider, call.first_byte_at - started)
                self.traffic.answered(provider.id)
                deadline = time.monotonic() + self._settings.max_stream_seconds
                return OpenStream(response, provider, lease, deadline, self._settings.max_response_bytes, first, session,
                                  adapter, translator)
            except (Retryable, TimeoutError, aiohttp.ClientError) as exc:
                error = exc if isinstance(exc, Retryable) else transport_failure(provider, exc)
                failures.append(error)
                call.upstream_seconds += time.perf_counter() - started
                if response is not None:
                    response.release()  # an unfinished body closes the connection, never reused
                await self._failed(provider, error)
                await self.release(lease)
            except BaseException:
                if response is not None:
                    response.release()
                await self.release(lease)
                raise
        raise self._exhausted(call.router, failures)

    def _exhausted(self, router: RouterEntry, failures: list[Retryable]) -> Exception:
        if not failures:
            return ServiceUnavailableError(
                f"Model '{router.name}' has no available provider; retry shortly",
                retry_after=max(1, int(self._settings.cooldown_seconds)),
            )
        if all(f.kind == "rate_limited" for f in failures):
            # Every provider tried is rate-limited: a 429 tells the client to come back (when
            # the first one said it could), where a 502 would say something is broken.
            waits = [f.retry_after for f in failures if f.retry_after is not None]
            retry_after = min(waits) if waits else self._settings.cooldown_seconds
            return TooManyRequestsError(
                f"Model '{router.name}': every provider is rate-limited; retry after {math.ceil(retry_after)}s",
                retry_after=math.ceil(retry_after),
            )
        last = failures[-1]
        if last.kind == "timeout":
            return UpstreamTimeoutError(f"Model '{router.name}': {last.detail}")
        return UpstreamError(f"Model '{router.name}': {last.detail}")
