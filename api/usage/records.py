"""One request's usage record: who called what, the outcome, tokens, cost and carbon."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from api.db.base import utcnow


@dataclass
class UsageRecord:
    request_id: str
    endpoint: str
    method: str
    status: int
    user_id: int | None
    organization_id: int | None
    key_id: int | None
    key_name: str | None
    router_id: int | None = None
    provider_id: int | None = None
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    cost_nanos: int = 0
    kwh_min: float = 0.0
    kwh_max: float = 0.0
    kgco2eq_min: float = 0.0
    kgco2eq_max: float = 0.0
    latency_ms: int | None = None
    ttft_ms: int | None = None
    cached: bool = False
    policies: str | None = None
    created: datetime = field(default_factory=utcnow)
    tag: str | None = None
    end_user: str | None = None
