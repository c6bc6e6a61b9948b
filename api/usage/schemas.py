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
    key = "key"
    organization = "organization"
    router = "router"
    tag = "tag"


class UsageTotal(BaseModel):
    object: Literal["usage.total"] = "usage.total"
    day: str
    group: UsageGroup
    id: int | None = Field(description="The user's, key's, organization's or router's id; null: none (a call with the "
                           "master key has no user), or group_by=tag.")
    tag: str | None = Field(default=None, description="group_by=tag: the tag (null: calls without one).")
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost: float
    kWh: CarbonRange
    kgCO2eq: CarbonRange
    budget: float | None = Field(default=None, description="group_by=user: the user's remaining budget now.")


class TopOrder(StrEnum):
    cost = "cost"
    requests = "requests"
    total_tokens = "total_tokens"


class UsageTop(BaseModel):
    """One group's totals over a whole period."""

    object: Literal["usage.top"] = "usage.top"
    group: UsageGroup
    id: int | None
    name: str | None = Field(description="The user's email, or the key's, organization's or router's name (null if deleted).")
    tag: str | None
    requests: int
    errors: int
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost: float
    kWh: CarbonRange
    kgCO2eq: CarbonRange


class UsageRecordOut(BaseModel):
    """One request's record, as an administrator searches them."""

    object: Literal["usage.record"] = "usage.record"
    id: int
    request_id: str
    created: int
    user: int | None
    organization: int | None
    key: int | None
    key_name: str | None
    router: int | None
    provider: int | None
    model: str | None
    endpoint: str
    method: str
    status: int
    tag: str | None
    end_user: str | None
    usage: UsageDetail
