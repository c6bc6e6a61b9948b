"""A request's meter: gathers who, what and how much, and records it exactly once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from api.identity.auth import Principal
from api.logs import usage_request_id
from api.catalog.catalog import ProviderTarget, RouterEntry
from api.usage.accounting import NO_CARBON, Carbon, carbon_footprint, cost_nanos
from api.usage.records import UsageRecord
from api.usage.writer import UsageWriter


class Meter:
    def __init__(
        self,
        writer: UsageWriter,
        principal: Principal,
        endpoint: str,
        method: str = "POST",
        observe: Callable[[UsageRecord], None] | None = None,
    ) -> None:
        self.request_id = usage_request_id()
        self.started = time.perf_counter()
        self.principal = principal
        self.endpoint = endpoint
        self.method = method
        self.model: str | None = None
        self.router: RouterEntry | None = None
        self.provider: ProviderTarget | None = None
        self.first_byte_at: float | None = None
        self.upstream_seconds = 0.0
        self._writer = writer
        writer.expect()
        self._observe = observe
        self._on_record: list[Callable[[UsageRecord], Awaitable[None]]] = []
        self.headers: dict[str, str] = {}
        self._recorded = False
        self._settle_later = False
        self._unsettled: UsageRecord | None = None

    def on_record(self, settle: Callable[[UsageRecord], Awaitable[None]]) -> None:
        """Run `settle(record)` when the request is recorded (exactly once, any outcome)."""
        self._on_record.append(settle)

    def settle_after_response(self) -> None:
        """Run the settlements in `settle()`, once the response is on its way, instead of in
        `record()`: the client does not wait for their round trip. Whoever calls this must
        make sure `settle()` runs (a response's background task, or an error path)."""
        self._settle_later = True

    async def settle(self) -> None:
        record, self._unsettled = self._unsettled, None
        if record is not None:
            await self._run_settlements(record)

    async def _run_settlements(self, record: UsageRecord) -> None:
        if len(self._on_record) == 1:
            await self._on_record[0](record)
        elif self._on_record:
            await asyncio.gather(*(settle(record) for settle in self._on_record))

    @property
    def recorded(self) -> bool:
        return self._recorded

    def overhead_ms(self) -> float:
        """The gateway's own time so far: everything but waiting for the upstream."""
        return max(0.0, (time.perf_counter() - self.started - self.upstream_seconds) * 1000)

    def usage(self, prompt_tokens: int, completion_tokens: int) -> tuple[dict[str, Any], int, Carbon]:
        """The `usage` object of a response, with its cost (nanos) and carbon."""
        cost, carbon = 0, NO_CARBON
        if self.router is not None:
            cost = cost_nanos(prompt_tokens, completion_tokens, self.router.cost_prompt_micros, self.router.cost_completion_micros)
        if self.provider is not None:
            carbon = carbon_footprint(
                self.provider.model_total_params, self.provider.model_active_params, completion_tokens,
                self.provider.model_hosting_zone, time.perf_counter() - self.started,
            )
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "cost": cost / 1_000_000_000,
            "carbon": carbon.as_dict(),
            "requests": 1,
        }
        return usage, cost, carbon

    async def record(
        self, status: int, prompt_tokens: int = 0, completion_tokens: int = 0, cost: int = 0, carbon: Carbon = NO_CARBON
    ) -> None:
        if self._recorded:
            return
        self._recorded = True
        now = time.perf_counter()
        record = UsageRecord(
            request_id=self.request_id, endpoint=self.endpoint, method=self.method, status=status,
            user_id=self.principal.user_id, organization_id=self.principal.organization_id,
            key_id=self.principal.key_id, key_name=self.principal.key_name,
            router_id=self.router.id if self.router else None, provider_id=self.provider.id if self.provider else None,
            model=self.model, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens, cost_nanos=cost,
            kwh_min=carbon.kwh_min, kwh_max=carbon.kwh_max, kgco2eq_min=carbon.kgco2eq_min, kgco2eq_max=carbon.kgco2eq_max,
            latency_ms=int((now - self.started) * 1000),
            ttft_ms=int((self.first_byte_at - self.started) * 1000) if self.first_byte_at else None,
            )
        if self._observe is not None:
            self._observe(record)
        # Recorded before anything else is awaited: a request cancelled from here on (a client
        # gone, a shutdown deadline) is accounted all the same.
        await self._writer.record(record, expected=True)
        if self._settle_later:
            self._unsettled = record
        else:
            await self._run_settlements(record)
