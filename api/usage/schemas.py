"""Usage responses (OpenGateLLM's `me.usage` shape) and the admin's daily totals."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field


class CarbonRange(BaseModel):
    min: float
    max: float


class Carbon(BaseModel):
    kWh: CarbonRange
    kgCO2eq: CarbonRange


class UsageMetrics(BaseModel):
    latency: int | None
    ttft: int | None


class UsageDetail(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost: float
    carbon: Carbon
    metrics: UsageMetrics


class MeUsage(BaseModel):
    object: Literal["me.usage"] = "me.usage"
    id: int | None = Field(
        description="null for a call this process answered moments ago, whose record is not written yet (records are "
        "written in batches)"
    )
    model: str | None
    key: str | None
    endpoint: str
    method: str
    status: int
    usage: UsageDetail
    created: int


class UsageGroup(StrEnum):
    user = "user"
    organization = "organization"
    router = "router"


class UsageTotal(BaseModel):
    object: Literal["usage.total"] = "usage.total"
    day: str
    group: UsageGroup
    id: int | None
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost: float
    kWh: CarbonRange
    kgCO2eq: CarbonRange
    budget: float | None = Field(default=None, description="group_by=user: the user's remaining budget now.")
