"""Prometheus metrics, in a registry of the app's own (no global state between apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest

from api.observability.components import ComponentGauges
from api.observability.record_metrics import RecordMetrics

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # The series every call updates: plain numbers, read at each scrape (record_metrics.py).
        self.records = RecordMetrics(LATENCY_BUCKETS)
        r.register(self.records)
        self.upstream_errors = Counter("tollgate_upstream_errors", "Failed provider calls by kind", ["provider", "kind"], registry=r)
        self.rejections = Counter("tollgate_limit_rejections", "Requests refused by a limit or capacity", ["reason"], registry=r)
        self.components = ComponentGauges(r)  # database, Redis, usage writer, documents: read at each scrape

    def render(self) -> bytes:
        return generate_latest(self.registry)
