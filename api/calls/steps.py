"""The steps of the call pipeline (`api.calls.pipeline`), in the order they are entered."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from api.calls.access import may_call
from api.calls.caching import AnswerFromCache
from api.calls.call import CLIENT_CLOSED, Call
from api.calls.gateway import ENDPOINT_TYPES, Gateway
from api.calls.pipeline import Step, StepBase
from api.catalog.catalog import ModelCatalog, no_provider
from api.errors import InvalidRequestError, NotFoundError, PermissionDeniedError
from api.quota.quotas import Quotas
from api.usage.accounting import NO_CARBON, Carbon, carbon_footprint, cost_nanos
from api.usage.records import UsageRecord
from api.state.response_cache import ResponseCache
from api.usage.writer import UsageWriter

logger = logging.getLogger("tollgate.usage")


class Record:
    """Every call is recorded exactly once, whatever its outcome: entered first, left last."""

    def __init__(self, writer: UsageWriter, observe: Callable[[UsageRecord], None]) -> None:
        self._writer = writer
        self._observe = observe

    async def enter(self, call: Call) -> None:
        self._writer.expect()  # a shutdown waits for this call's record

    def stream_opened(self, call: Call) -> None:
        """Its client is about to get a 200 and chunks: should the process die before the end,
        the call is recorded as cut, charged for its prompt (the journal replays it)."""
        prompt = call.operation.prompt_estimate()
        cost = 0
        if call.router is not None:
            cost = cost_nanos(prompt, 0, call.router.cost_prompt_micros, call.router.cost_completion_micros)
        try:
            call.journaled_start = self._writer.started(_record_of(call, CLIENT_CLOSED, prompt, 0, cost, NO_CARBON))
        except OSError:  # a full disk: the stream goes on, and is recorded at its end as any other
            logger.exception("journaling the start of stream %s failed", call.request_id)

    async def leave(self, call: Call) -> None:
        record = _record_of(call, call.status or 500, call.prompt_tokens, call.completion_tokens, call.cost_nanos, call.carbon)
        self._observe(record)
        # Journaled and queued before the answer leaves: a process killed from here on has it.
        await self._writer.record(record, expected=True, started=call.journaled_start)


def _record_of(call: Call, status: int, prompt: int, completion: int, cost: int, carbon: Carbon) -> UsageRecord:
    return UsageRecord(
        request_id=call.request_id, endpoint=call.path, method=call.method, status=status,
        user_id=call.principal.user_id, organization_id=call.principal.organization_id,
        key_id=call.principal.key_id, key_name=call.principal.key_name,
        router_id=call.router.id if call.router else None, provider_id=call.provider.id if call.provider else None,
        model=call.model, prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
        cost_nanos=cost, kwh_min=carbon.kwh_min, kwh_max=carbon.kwh_max,
        kgco2eq_min=carbon.kgco2eq_min, kgco2eq_max=carbon.kgco2eq_max,
        latency_ms=int((time.perf_counter() - call.started) * 1000),
        ttft_ms=int((call.first_byte_at - call.started) * 1000) if call.first_byte_at else None,
        cached=call.cached, policies=call.policy_findings, tag=call.tag, end_user=call.end_user,
    )


class ResolveRouter(StepBase):
    """The model name or alias to a router the caller can see, of a type that serves the call."""

    def __init__(self, catalog: ModelCatalog) -> None:
        self._catalog = catalog

    async def enter(self, call: Call) -> None:
        assert call.model is not None
        router = self._catalog.resolve(call.model)
        if router is None or not may_call(self._catalog, call.principal, router):
            raise NotFoundError(f"Model '{call.model}' not found")
        endpoint = call.operation.endpoint
        if router.type not in ENDPOINT_TYPES[endpoint]:
            raise InvalidRequestError(f"Model '{call.model}' is a {router.type} model and cannot serve {endpoint.value}")
        if not router.servable:
            raise no_provider(router)
        call.router = router


class Authorise(StepBase):
    """The caller's role may use the router: a limit of 0 on it forbids it (403)."""

    async def enter(self, call: Call) -> None:
        assert call.router is not None
        limits = call.principal.limits
        if limits is not None and any(value == 0 for value in limits.get(call.router.id, {}).values()):
            raise PermissionDeniedError(f"Your role may not use model '{call.router.name}'")


class Prepare(StepBase):
    """The operation's own work that needs the router and must precede admission: the search of
    a chat with search, the pages of a document to OCR (their count bounds the call)."""

    async def enter(self, call: Call) -> None:
        await call.operation.prepare(call)


class Admit:
    """Limits and budget in one atomic step on the way in; settled to the real tokens and cost
    on the way out (after `Price`)."""

    def __init__(self, quotas: Quotas) -> None:
        self._quotas = quotas

    async def enter(self, call: Call) -> None:
        assert call.router is not None
        operation = call.operation
        call.quota = await self._quotas.admit(
            call.principal, call.router, _once(operation.prompt_estimate), operation.completion_bound(call, self._quotas)
        )
        if call.quota is not None:
            call.headers.update(call.quota.headers())

    async def leave(self, call: Call) -> None:
        if call.quota is not None:
            await self._quotas.settle(call.quota, call.prompt_tokens + call.completion_tokens, call.cost_nanos)


class Price(StepBase):
    """The call's cost at the router's prices and its carbon footprint, from its real tokens."""

    async def leave(self, call: Call) -> None:
        if call.quota is not None and call.quota.completion_bound is not None:
            # A provider that generated past the bound it was sent is not charged for it: the
            # call settles within what it reserved (tokens and cost alike).
            call.completion_tokens = min(call.completion_tokens, call.quota.completion_bound)
        prompt, completion = call.prompt_tokens, call.completion_tokens
        if call.router is not None:
            call.cost_nanos = cost_nanos(prompt, completion, call.router.cost_prompt_micros, call.router.cost_completion_micros)
            reserved = call.quota.reserved_nanos if call.quota is not None else None
            if reserved is not None:
                call.cost_nanos = min(call.cost_nanos, reserved)
        if call.provider is not None:
            call.carbon = carbon_footprint(
                call.provider.model_total_params, call.provider.model_active_params, completion,
                call.provider.model_hosting_zone, time.perf_counter() - call.started,
            )
        call.usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "cost": call.cost_nanos / 1_000_000_000,
            "carbon": call.carbon.as_dict(),
            "requests": 1,
        }
        if call.answer is not None:
            reported = call.answer.get("usage")
            # A transcription's usage says what it counts (`type`): kept, with Tollgate's beside it.
            typed = reported if isinstance(reported, dict) and "type" in reported else {}
            call.answer["usage"] = {**typed, **call.usage} if typed else call.usage


class Forward:
    """Send the call to a provider of the router, failing over as the gateway does."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    async def enter(self, call: Call) -> None:
        await call.operation.forward(call, self._gateway)

    async def leave(self, call: Call) -> None:
        if call.stream is not None:
            await self._gateway.release(call.stream.lease)


def _once(compute: Callable[[], int]) -> Callable[[], int]:
    """A token estimate computed at most once, and only if a limit or a budget needs it."""
    value: list[int] = []

    def get() -> int:
        if not value:
            value.append(compute())
        return value[0]

    return get


def build_steps(
    catalog: ModelCatalog, quotas: Quotas, gateway: Gateway, writer: UsageWriter, observe: Callable[[UsageRecord], None],
    cache: ResponseCache, extra: tuple[Step, ...] = (),
) -> list[Step]:
    """The pipeline's steps; `extra` go after authorisation and before admission (where a policy
    belongs: a refused call takes nothing from the caller's limits). The response cache comes
    after admission: a hit counts against the request limits."""
    return [Record(writer, observe), ResolveRouter(catalog), Authorise(), *extra, Prepare(), Admit(quotas),
            AnswerFromCache(cache), Price(), Forward(gateway)]
