"""A provider's quality-of-service policy (OpenGateLLM's `qos_metric` and `qos_limit`), as the
gateway applies it when it picks a provider.

- `inflight`: at most `qos_limit` calls at once on the provider, across replicas; a call that
  finds every provider at its cap waits for a slot (`gateway.qos_wait_seconds`), then is a 503.
- `ttft`: the provider's observed time to first token (`api.state.ttft`) must stay at or below
  `qos_limit` milliseconds. One above it is passed over while any other provider of the router
  can take the call (it comes after them, before those cooling down after a failure); it is not
  refused outright, so a router whose every provider is slow still answers, slowly.

Calls waiting for a slot take them by priority, then age (`PriorityGate`).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence

from api.catalog.catalog import ProviderTarget
from api.state.ttft import TtftTracker


def inflight_cap(provider: ProviderTarget) -> int | None:
    if provider.qos_metric == "inflight" and provider.qos_limit is not None:
        return max(1, int(provider.qos_limit))
    return None


def watches_ttft(provider: ProviderTarget) -> bool:
    """Only the providers limited by it have their time to first token tracked: the others'
    calls make no round trip to the shared store for it."""
    return provider.qos_metric == "ttft" and provider.qos_limit is not None


async def too_slow(tracker: TtftTracker, providers: Sequence[ProviderTarget]) -> dict[int, float]:
    """The providers whose observed time to first token is over their limit, with that reading."""
    watched = [p for p in providers if watches_ttft(p)]
    if not watched:
        return {}
    readings = await tracker.readings(p.id for p in watched)
    return {p.id: readings[p.id] for p in watched if p.id in readings and readings[p.id] > (p.qos_limit or 0)}


class PriorityGate:
    """Requests of one process waiting for a slot on a router: only the first in line (highest
    priority, then oldest) tries to take a slot; the others wait their turn."""

    def __init__(self) -> None:
        self._waiters: list[tuple[int, int]] = []
        self._order = itertools.count()

    def enqueue(self, priority: int) -> tuple[int, int]:
        entry = (-priority, next(self._order))
        heapq.heappush(self._waiters, entry)
        return entry

    def is_first(self, entry: tuple[int, int]) -> bool:
        return bool(self._waiters) and self._waiters[0] == entry

    @property
    def busy(self) -> bool:
        return bool(self._waiters)

    def leave(self, entry: tuple[int, int]) -> None:
        self._waiters.remove(entry)
        heapq.heapify(self._waiters)
