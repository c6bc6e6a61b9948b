"""Prometheus metrics, in a registry of the app's own (no global state between apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from api.usage.writer import UsageRecord

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
        self.usage_queue = Gauge("tollgate_usage_queue_depth", "Usage records waiting to be written", registry=r)

    def observe(self, record: UsageRecord) -> None:
        model = record.model or ""
        self.requests.labels(record.endpoint, model, str(record.status)).inc()
        if record.latency_ms is not None:
            self.latency.labels(record.endpoint).observe(record.latency_ms / 1000)
        if record.ttft_ms is not None:
            self.ttft.labels(record.endpoint).observe(record.ttft_ms / 1000)
        if record.prompt_tokens:
            self.tokens.labels(model, "prompt").inc(record.prompt_tokens)
        if record.completion_tokens:
            self.tokens.labels(model, "completion").inc(record.completion_tokens)
        if record.cost_nanos:
            self.cost.labels(model).inc(record.cost_nanos / 1e9)
        if record.kwh_max:
            self.energy.labels(model).inc(record.kwh_max)
            self.carbon.labels(model).inc(record.kgco2eq_max)

    def render(self) -> bytes:
        return generate_latest(self.registry)
