"""Prometheus metrics, in a registry of the app's own (no global state between apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from api.observability.components import ComponentGauges
from api.usage.records import UsageRecord

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("tollgate_requests", "Model requests by endpoint, model and status", ["endpoint", "model", "status"], registry=r)
        self.latency = Histogram("tollgate_request_latency_seconds", "End-to-end latency of model requests", ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("tollgate_time_to_first_token_seconds", "Time to the provider's first byte", ["endpoint"], buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("tollgate_tokens", "Tokens by model and kind", ["model", "kind"], registry=r)
        self.cost = Counter("tollgate_cost", "Cost charged, in budget currency units", ["model"], registry=r)
        self.energy = Counter("tollgate_energy_kwh", "Estimated energy (upper bound), kWh", ["model"], registry=r)
        self.carbon = Counter("tollgate_carbon_kgco2eq", "Estimated emissions (upper bound), kgCO2eq", ["model"], registry=r)
        self.in_flight = Gauge("tollgate_provider_in_flight", "Requests in flight per provider, this process", ["provider"], registry=r)
        self.upstream_errors = Counter("tollgate_upstream_errors", "Failed provider calls by kind", ["provider", "kind"], registry=r)
        self.rejections = Counter("tollgate_limit_rejections", "Requests refused by a limit or capacity", ["reason"], registry=r)
        self.components = ComponentGauges(r)  # database, Redis, usage writer, documents: read at each scrape
        # The labelled children a record updates, looked up once per (endpoint, model, status).
        self._series: dict[tuple[str, str, int], _RecordSeries] = {}
        self._in_flight: dict[int, Gauge] = {}

    def provider_in_flight(self, provider_id: int) -> Gauge:
        """The in-flight gauge of one provider, looked up once: `labels()` builds and checks its
        key on every call, twice a request."""
        gauge = self._in_flight.get(provider_id)
        if gauge is None:
            gauge = self._in_flight[provider_id] = self.in_flight.labels(str(provider_id))
        return gauge

    def observe(self, record: UsageRecord) -> None:
        # A name that resolved to no router is the client's free text: not a label value, or
        # anyone could grow the metrics without bound.
        model = (record.model or "") if record.router_id is not None else ""
        series = self._series.get((record.endpoint, model, record.status))
        if series is None:
            series = self._series[(record.endpoint, model, record.status)] = _RecordSeries(self, record.endpoint, model, record.status)
        series.requests.inc()
        if record.latency_ms is not None:
            series.latency.observe(record.latency_ms / 1000)
        if record.ttft_ms is not None:
            series.ttft.observe(record.ttft_ms / 1000)
        if record.prompt_tokens:
            series.prompt_tokens.inc(record.prompt_tokens)
        if record.completion_tokens:
            series.completion_tokens.inc(record.completion_tokens)
        if record.cost_nanos:
            series.cost.inc(record.cost_nanos / 1e9)
        if record.kwh_max:
            series.energy.inc(record.kwh_max)
            series.carbon.inc(record.kgco2eq_max)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _RecordSeries:
    def __init__(self, metrics: GatewayMetrics, endpoint: str, model: str, status: int) -> None:
        self.requests = metrics.requests.labels(endpoint, model, str(status))
        self.latency = metrics.latency.labels(endpoint)
        self.ttft = metrics.ttft.labels(endpoint)
        self.prompt_tokens = metrics.tokens.labels(model, "prompt")
        self.completion_tokens = metrics.tokens.labels(model, "completion")
        self.cost = metrics.cost.labels(model)
        self.energy = metrics.energy.labels(model)
        self.carbon = metrics.carbon.labels(model)
