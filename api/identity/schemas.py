"""Request and response bodies of the identity API (OpenGateLLM shapes)."""

from __future__ import annotations

import re
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, field_validator

from api.common.schemas import Id, Name, OpenRequestModel, RequestModel, Timestamp


class Permission(StrEnum):
    admin = "admin"
    create_public_collection = "create_public_collection"
    read_metric = "read_metric"
    provide_models = "provide_models"


class LimitType(StrEnum):
    tpm = "tpm"
    tpd = "tpd"
    rpm = "rpm"
    rpd = "rpd"


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


def _normalise_email(value: str) -> str:
    value = value.strip().lower()
    if not _EMAIL.match(value):
        raise ValueError("not a valid email address")
    if len(value) > 254:  # lower-casing can lengthen some characters (İ -> i̇)
        raise ValueError("an email address has at most 254 characters")
    return value


Email = Annotated[str, Field(min_length=3, max_length=254), AfterValidator(_normalise_email)]
# Bounded above: argon2 of a megabyte-long password would be a cheap denial of service.
Password = Annotated[str, Field(min_length=8, max_length=128)]
CurrentPassword = Annotated[str, Field(max_length=128)]
# At most a billion units, so that its billionths fit a 64-bit integer.
Budget = Annotated[Decimal, Field(ge=0, le=10**9, decimal_places=9)]
Priority = Annotated[int, Field(ge=0, le=1000)]
BudgetPeriod = Literal["day", "week", "month"]
ModelNames = Annotated[list[Annotated[str, Field(min_length=1, max_length=255)]], Field(max_length=1000)]
Tags = Annotated[list[Annotated[str, Field(min_length=1, max_length=64)]], Field(max_length=50)]


class KeyLimits(RequestModel):
    """A key's own rate limits, on every model together; absent or null: no such limit."""

    rpm: Annotated[int, Field(ge=1, le=10**15)] | None = None
    rph: Annotated[int, Field(ge=1, le=10**15)] | None = None
    rpd: Annotated[int, Field(ge=1, le=10**15)] | None = None
    tpm: Annotated[int, Field(ge=1, le=10**15)] | None = None
    tph: Annotated[int, Field(ge=1, le=10**15)] | None = None
    tpd: Annotated[int, Field(ge=1, le=10**15)] | None = None


class BudgetOut(BaseModel):
    """Where a budget stands: `budget` is a one-off budget's remaining amount, or an allowance's
    amount per `budget_period` (null: unlimited)."""

    budget: float | None
    budget_period: BudgetPeriod | None = None
    budget_remaining: float | None = Field(None, description="What is left now (of the current period, for an allowance).")
    budget_resets_at: int | None = Field(None, description="When the allowance starts its next period (unix time, UTC).")


class Limit(BaseModel):
    router: Id
    type: LimitType
    value: int | None = Field(default=None, ge=0, le=10**15, description="null = unlimited, 0 = forbidden")


def _unique_limits(limits: list[Limit] | None) -> list[Limit] | None:
    if limits is None:
        return None
    seen = {(limit.router, limit.type) for limit in limits}
    if len(seen) != len(limits):
        raise ValueError("each (router, type) pair may appear only once")
    return limits


def _unique_permissions(permissions: list[Permission] | None) -> list[Permission] | None:
    return None if permissions is None else sorted(set(permissions))


Limits = Annotated[list[Limit], Field(max_length=1000), AfterValidator(_unique_limits)]
Permissions = Annotated[list[Permission], AfterValidator(_unique_permissions)]


class Created(BaseModel):
    id: int


class KeyCreated(BaseModel):
    id: int
    token: str = Field(description="The API key. It is shown this once and cannot be read again.")


class LoginResult(BaseModel):
    id: int
    key: str


# Organizations


class OrganizationCreate(OpenRequestModel):
    name: Name
    budget: Budget | None = Field(None, description="A budget its users draw on together (null: none).")
    budget_period: BudgetPeriod | None = Field(None, description="Makes `budget` an allowance per period.")
    models: ModelNames | None = Field(None, description="The only models (names or aliases) its users may use.")
    keep_conversations: bool = Field(False, description="Keep each call's request and answer as conversation records (docs/responses.md).")


class OrganizationUpdate(OpenRequestModel):
    """Absent fields stay as they are; an explicit null clears budget or models."""

    name: Name | None = None
    budget: Budget | None = None
    budget_period: BudgetPeriod | None = None
    models: ModelNames | None = None
    keep_conversations: bool | None = None


class OrganizationOut(BudgetOut):
    object: Literal["organization"] = "organization"
    id: int
    name: str
    users: int
    models: list[str] | None = None
    keep_conversations: bool = False
    created: int
    updated: int


# Roles


class RoleCreate(OpenRequestModel):
    name: Name
    permissions: Permissions = []
    limits: Limits = []
    keep_conversations: bool = Field(False, description="Keep each call's request and answer as conversation records (docs/responses.md).")


class RoleUpdate(OpenRequestModel):
    name: Name | None = None
    permissions: Permissions | None = None
    limits: Limits | None = None
    keep_conversations: bool | None = None


class RoleOut(BaseModel):
    object: Literal["role"] = "role"
    id: int
    name: str
    permissions: list[Permission]
    limits: list[Limit]
    keep_conversations: bool = False
    users: int
    created: int
    updated: int


# Users


class UserCreate(OpenRequestModel):
    email: Email
    name: Name | None = None
    password: Password
    role: Id
    organization: Id | None = None
    budget: Budget | None = None
    budget_period: BudgetPeriod | None = Field(None, description="Makes `budget` an allowance per period.")
    expires: Timestamp | None = None
    priority: Priority = 0


class UserUpdate(OpenRequestModel):
    """Absent fields stay as they are; an explicit null clears organization, budget or expires."""

    email: Email | None = None
    name: Name | None = None
    current_password: CurrentPassword | None = Field(
        None, description="The user's password now. Not needed by an administrator; when given, it must be right.")
    password: Password | None = None
    role: Id | None = None
    organization: Id | None = None
    budget: Budget | None = None
    budget_period: BudgetPeriod | None = None
    expires: Timestamp | None = None
    priority: Priority | None = None

    @field_validator("email", "password", "role", "priority")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("may be omitted but not null")
        return value


class UserOut(BudgetOut):
    object: Literal["user"] = "user"
    id: int
    email: str
    name: str | None
    role: int
    organization: int | None
    expires: int | None
    priority: int
    created: int
    updated: int


# Keys


class KeyCreate(OpenRequestModel):
    """A key may carry its own spend controls; the tightest of the key's, its user's, the
    organization's and the role's applies."""

    name: Name
    expires: Timestamp | None = None
    budget: Budget | None = Field(None, description="The key's own spend cap (null: only its user's).")
    budget_period: BudgetPeriod | None = Field(None, description="Makes `budget` an allowance per period.")
    limits: KeyLimits | None = None
    models: ModelNames | None = Field(None, description="The only models (names or aliases) the key may use.")
    tags: Tags | None = None
    use_cache: bool = Field(True, description="false: the key's calls are never answered from the response cache.")
    keep_conversations: bool = Field(False, description="Keep each call's request and answer as conversation records (docs/responses.md).")


class TokenCreate(KeyCreate):
    user: Id


class KeyUpdate(RequestModel):
    """Absent fields stay as they are; an explicit null clears expires, budget, limits, models or tags."""

    name: Name | None = None
    expires: Timestamp | None = None
    budget: Budget | None = None
    budget_period: BudgetPeriod | None = None
    limits: KeyLimits | None = None
    models: ModelNames | None = None
    tags: Tags | None = None
    use_cache: bool | None = None
    keep_conversations: bool | None = None

    @field_validator("name", "use_cache", "keep_conversations")
    @classmethod
    def _not_null(cls, value: object) -> object:
        if value is None:
            raise ValueError("may be omitted but not null")
        return value


class KeyRevoke(RequestModel):
    reason: Annotated[str, Field(max_length=1000)] | None = None


class KeyOut(BudgetOut):
    object: Literal["key"] = "key"
    id: int
    name: str
    token: str = Field(description="A masked hint of the key, never the key itself.")
    expires: int | None
    created: int
    limits: dict[str, int] | None = None
    models: list[str] | None = None
    tags: list[str] | None = None
    use_cache: bool = True
    keep_conversations: bool = False
    revoked: int | None = Field(None, description="When it was revoked (unix time); null: it is not.")
    revoked_reason: str | None = None


class TokenOut(KeyOut):
    object: Literal["token"] = "token"  # type: ignore[assignment]
    user: int


# Self-service and login


class UserInfo(BudgetOut):
    object: Literal["userInfo"] = "userInfo"
    id: int
    email: str
    name: str | None
    role: int
    organization: int | None
    permissions: list[Permission]
    limits: list[Limit]
    limits_usage: list[LimitUsage] = Field(default_factory=list, description="Current counts of the limited windows.")
    key: KeyOut | None = Field(None, description="The key of this call, with its own spend controls.")
    expires: int | None
    priority: int
    created: int
    updated: int


class LimitUsage(BaseModel):
    router: int
    type: LimitType
    limit: int
    used: int
    reset_in: int = Field(description="Seconds until this window ends and the count restarts.")


class UserInfoUpdate(OpenRequestModel):
    name: Name | None = None
    email: Email | None = None
    current_password: CurrentPassword | None = None
    password: Password | None = None


class LoginRequest(OpenRequestModel):
    email: Annotated[str, Field(min_length=1, max_length=254)]
    password: Annotated[str, Field(min_length=1, max_length=128)]


class BudgetRecharge(RequestModel):
    amount: Annotated[Decimal, Field(ge=-(10**9), le=10**9, decimal_places=9)]
    reason: Annotated[str, Field(max_length=1000)] | None = None


class BudgetChangeOut(BaseModel):
    object: Literal["budget.change"] = "budget.change"
    id: int
    user: int | None = Field(None, description="Whose budget: a user's, a key's or an organization's.")
    key: int | None = None
    organization: int | None = None
    actor: int | None = Field(description="The administrator's user id; null for the master key, or a reset.")
    kind: Literal["set", "recharge", "reset"] = Field(
        description="`set` (absolute), `recharge` (relative), `reset`: a new period of an allowance started.")
    amount: float | None
    budget: float | None = Field(description="The budget right after the change.")
    reason: str | None
    created: int
