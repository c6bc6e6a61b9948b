"""The metrics every model call updates, kept as plain numbers and read at each scrape.

prometheus_client's Counter and Histogram take a lock, check the metric and look the value
up on every `inc` and `observe`: about 600 bytecodes a call for the nine series a call
updates, a tenth of the gateway's own Python work per call (docs/performance.md, eighth
session). Here a call adds to a few numbers in dicts; the scrape turns them into the same
families, through prometheus_client's documented custom-collector interface. Everything runs
on the event loop's thread, the scrape included: no lock is needed.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from api.usage.records import UsageRecord


class _Histogram:
    """One series: the count of observations per bucket (not yet cumulative) and their sum."""

    __slots__ = ("counts", "total")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * (buckets + 1)  # the last one is +Inf
        self.total = 0.0


class _ModelTotals:
    """What one model's calls add up to."""

    __slots__ = ("prompt_tokens", "completion_tokens", "cost", "kwh", "kgco2eq")

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost = 0.0
        self.kwh = 0.0
        self.kgco2eq = 0.0


class RecordMetrics:
    """A collector (prometheus_client's interface: `collect`, `describe`) of the calls' series."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self._bounds = tuple(buckets)
        self._le = [*(str(float(bound)) for bound in buckets), "+Inf"]  # as prometheus_client writes them
        self._requests: dict[tuple[str, str, str], int] = {}
        self._latency: dict[str, _Histogram] = {}
        self._ttft: dict[str, _Histogram] = {}
        self._models: dict[str, _ModelTotals] = {}
        self._in_flight: dict[int, int] = {}  # by provider id

    def observe(self, record: UsageRecord) -> None:
        # A name that resolved to no router is the client's free text: not a label value, or
        # anyone could grow the metrics without bound.
        model = (record.model or "") if record.router_id is not None else ""
        endpoint = record.endpoint
        key = (endpoint, model, str(record.status))
        count = self._requests.get(key)
        if count is None:
            self._start_series(endpoint, model)
            count = 0
        self._requests[key] = count + 1
        if record.latency_ms is not None:
            self._add(self._latency[endpoint], record.latency_ms / 1000)
        if record.ttft_ms is not None:
            self._add(self._ttft[endpoint], record.ttft_ms / 1000)
        totals = self._models[model]
        totals.prompt_tokens += record.prompt_tokens
        totals.completion_tokens += record.completion_tokens
        totals.cost += record.cost_nanos / 1e9
        totals.kwh += record.kwh_max
        totals.kgco2eq += record.kgco2eq_max

    def _start_series(self, endpoint: str, model: str) -> None:
        """A series' first record: its endpoint's and its model's series start too, at 0, as
        prometheus_client's labelled children appear once made."""
        if endpoint not in self._latency:
            self._latency[endpoint] = _Histogram(len(self._bounds))
            self._ttft[endpoint] = _Histogram(len(self._bounds))
        if model not in self._models:
            self._models[model] = _ModelTotals()

    def _add(self, histogram: _Histogram, seconds: float) -> None:
        histogram.counts[bisect_left(self._bounds, seconds)] += 1  # the first bound ≥ the value
        histogram.total += seconds

    def provider_started(self, provider_id: int) -> None:
        self._in_flight[provider_id] = self._in_flight.get(provider_id, 0) + 1

    def provider_ended(self, provider_id: int) -> None:
        self._in_flight[provider_id] = self._in_flight.get(provider_id, 0) - 1

    def describe(self) -> Iterator[Metric]:
        """The families without their samples: the registry learns their names from these."""
        return self._families(with_samples=False)

    def collect(self) -> Iterator[Metric]:
        return self._families(with_samples=True)

    def _families(self, with_samples: bool) -> Iterator[Metric]:
        requests = CounterMetricFamily("tollgate_requests", "Model requests by endpoint, model and status",
                                       labels=["endpoint", "model", "status"])
        tokens = CounterMetricFamily("tollgate_tokens", "Tokens by model and kind", labels=["model", "kind"])
        cost = CounterMetricFamily("tollgate_cost", "Cost charged, in budget currency units", labels=["model"])
        energy = CounterMetricFamily("tollgate_energy_kwh", "Estimated energy (upper bound), kWh", labels=["model"])
        carbon = CounterMetricFamily("tollgate_carbon_kgco2eq", "Estimated emissions (upper bound), kgCO2eq", labels=["model"])
        latency = HistogramMetricFamily("tollgate_request_latency_seconds", "End-to-end latency of model requests",
                                        labels=["endpoint"])
        ttft = HistogramMetricFamily("tollgate_time_to_first_token_seconds", "Time to the provider's first byte",
                                     labels=["endpoint"])
        in_flight = GaugeMetricFamily("tollgate_provider_in_flight", "Requests in flight per provider, this process",
                                      labels=["provider"])
        if with_samples:
            for labels, count in self._requests.items():
                requests.add_metric(labels, count)
            for model, totals in self._models.items():
                tokens.add_metric([model, "prompt"], totals.prompt_tokens)
                tokens.add_metric([model, "completion"], totals.completion_tokens)
                cost.add_metric([model], totals.cost)
                energy.add_metric([model], totals.kwh)
                carbon.add_metric([model], totals.kgco2eq)
            for family, histograms in ((latency, self._latency), (ttft, self._ttft)):
                for endpoint, histogram in histograms.items():
                    family.add_metric([endpoint], self._cumulative(histogram), histogram.total)
            for provider, count in self._in_flight.items():
                in_flight.add_metric([str(provider)], count)
        yield from (requests, latency, ttft, tokens, cost, energy, carbon, in_flight)

    def _cumulative(self, histogram: _Histogram) -> list[tuple[str, float]]:
        buckets, running = [], 0
        for le, count in zip(self._le, histogram.counts, strict=True):
            running += count
            buckets.append((le, running))
        return buckets
