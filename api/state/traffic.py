"""What this process's real calls say of each provider: calls in flight, and when it last
answered one. The health checks read it: a provider answering real traffic is healthy, and is
not probed while it works (llama.cpp serves `GET /v1/models` behind the lock its generation
holds, so a probe then both waits and disturbs the calls in flight)."""

from __future__ import annotations

import time


class ProviderTraffic:
    def __init__(self) -> None:
        self._in_flight: dict[int, int] = {}
        self._answered_at: dict[int, float] = {}  # time.monotonic()

    def started(self, provider_id: int) -> None:
        self._in_flight[provider_id] = self._in_flight.get(provider_id, 0) + 1

    def ended(self, provider_id: int) -> None:
        left = self._in_flight.get(provider_id, 0) - 1
        if left > 0:
            self._in_flight[provider_id] = left
        else:
            self._in_flight.pop(provider_id, None)

    def answered(self, provider_id: int) -> None:
        """The provider answered a real call (its answer, or a stream's first bytes)."""
        self._answered_at[provider_id] = time.monotonic()

    def working(self, provider_id: int, within_seconds: float) -> bool:
        """Calls are in flight on it, or it answered one in the last `within_seconds`."""
        if self._in_flight.get(provider_id, 0) > 0:
            return True
        answered = self._answered_at.get(provider_id)
        return answered is not None and time.monotonic() - answered <= within_seconds
