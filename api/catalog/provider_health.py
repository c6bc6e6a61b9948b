"""Provider health: every provider is probed on a schedule, so one that died is cooled down
(tried last, in every replica through the shared cooldowns) before users' calls find out.

A probe is the check made when the provider was added: a call its router's type must serve
(`ProviderAdapter.probe`). A failed probe cools the provider down until the next probe can say
otherwise; a passing one does not lift a cooldown that real calls set.

Real traffic counts as health: a provider with calls in flight in this process, or that
answered one since the last round, is not probed (a probe would wait behind, and can disturb,
the generation it is doing: llama.cpp) and is healthy.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from api.catalog.catalog import ModelCatalog, ProviderTarget
from api.providers import UpstreamCheckError
from api.providers.sessions import UpstreamSessions
from api.state.load import LoadTracker
from api.state.traffic import ProviderTraffic

logger = logging.getLogger("tollgate.health")

MAX_CONCURRENT_PROBES = 16


@dataclass(frozen=True)
class ProbeOutcome:
    healthy: bool
    checked_at: float  # Unix seconds
    latency_ms: int
    error: str | None = None


class HealthMonitor:
    def __init__(
        self, catalog: ModelCatalog, upstreams: UpstreamSessions, load: LoadTracker,
        interval_seconds: float, timeout_seconds: float, cooldown_seconds: float, traffic: ProviderTraffic | None = None,
    ) -> None:
        self._catalog = catalog
        self._traffic = traffic or ProviderTraffic()
        self._upstreams = upstreams
        self._load = load
        self._interval = interval_seconds
        self._timeout = timeout_seconds
        # Cooled until the next probe has had its chance to find the provider back.
        self._cooldown = max(cooldown_seconds, interval_seconds + timeout_seconds)
        self._outcomes: dict[int, ProbeOutcome] = {}

    def outcome(self, provider_id: int) -> ProbeOutcome | None:
        """The last probe of this process; None before the first."""
        return self._outcomes.get(provider_id)

    async def check_all(self) -> None:
        targets = [(provider, router.type) for router in self._catalog.routers() for provider in router.providers]
        limit = asyncio.Semaphore(MAX_CONCURRENT_PROBES)

        async def check(provider: ProviderTarget, router_type: str) -> None:
            async with limit:
                await self.check(provider, router_type)

        await asyncio.gather(*(check(provider, router_type) for provider, router_type in targets))
        known = {provider.id for provider, _ in targets}
        for gone in set(self._outcomes) - known:
            del self._outcomes[gone]

    async def check(self, provider: ProviderTarget, router_type: str) -> ProbeOutcome:
        if self._traffic.working(provider.id, self._interval + self._timeout):
            outcome = ProbeOutcome(True, time.time(), 0, None)
            self._outcomes[provider.id] = outcome
            return outcome
        started = time.perf_counter()
        error: str | None = None
        try:
            await self._upstreams.adapter_for(provider.type).probe(
                self._upstreams.for_url(provider.url), provider.upstream, router_type, min(self._timeout, provider.timeout),
            )
        except UpstreamCheckError as exc:
            # A probe that failed while real calls got answers (one began as it was sent) does
            # not condemn the provider: they say more than it does.
            if not self._traffic.working(provider.id, time.perf_counter() - started):
                error = str(exc)
        outcome = ProbeOutcome(error is None, time.time(), int((time.perf_counter() - started) * 1000), error)
        previous = self._outcomes.get(provider.id)
        self._outcomes[provider.id] = outcome
        if error is not None:
            await self._load.cool_down(provider.id, self._cooldown)
            if previous is None or previous.healthy:
                logger.warning("provider %d failed its health check and is cooled down for %.0fs: %s",
                               provider.id, self._cooldown, error)
        elif previous is not None and not previous.healthy:
            logger.info("provider %d passes its health check again", provider.id)
        return outcome

    async def check_round(self) -> None:
        """One round of the periodic checks, every `interval` seconds."""
        try:
            await self.check_all()
        except Exception:  # noqa: BLE001  (a failed round must not end the checks)
            logger.exception("provider health checks failed")

    @property
    def interval(self) -> float:
        return self._interval
