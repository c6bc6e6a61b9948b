"""The authenticated caller, as every service sees it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from api.errors import PermissionDeniedError
from api.identity.schemas import Permission

ALL_PERMISSIONS = frozenset(p.value for p in Permission)


@dataclass(frozen=True)
class Budget:
    """A budget the caller's calls draw on, as read with its key: the key's own, its user's,
    its organisation's. The tightest decides; each is reserved from on every call."""

    holder: str  # "key", "user" or "organization"
    holder_id: int
    name: str  # how a refusal names it
    nanos: int  # what was left when read (of the current period, for an allowance)
    period: str | None = None  # "day", "week", "month": a periodic allowance (api.common.periods)
    period_start: datetime | None = None  # the period `nanos` is for

    def describe(self) -> str:
        return {"key": f"the budget of key '{self.name}'", "user": "your budget",
                "organization": f"the budget of organization '{self.name}'"}[self.holder]


@dataclass(frozen=True)
class Principal:
    """The authenticated caller. The master key is a principal with no user behind it."""

    user_id: int | None
    key_id: int | None
    key_name: str | None
    role_id: int | None
    organization_id: int | None
    permissions: frozenset[str]
    # Router id -> {limit type: value}. A router absent here is out of reach; None: every router.
    limits: Mapping[int, Mapping[str, int | None]] | None
    priority: int
    # The budgets in the database, key's first (live balances are elsewhere): none, unlimited.
    budgets: tuple[Budget, ...]
    # The earlier of the key's and the user's expiry.
    expires: datetime | None
    # When it was read from the database (time.monotonic()): how old `budgets` may be.
    loaded_at: float = 0.0
    # The key's own rate limits, on every model together ({"rpm": 10, "tpd": 100000, ...}).
    key_limits: Mapping[str, int] | None = None
    # Names or aliases of the only models the key, and the organisation, may use (None: any).
    key_models: frozenset[str] | None = None
    organization_models: frozenset[str] | None = None
    use_cache: bool = True  # False: the key's calls are never answered from the response cache
    keep_conversations: bool = False  # its organization, role or key keeps conversation records

    def has(self, permission: Permission) -> bool:
        return permission.value in self.permissions

    def require(self, permission: Permission) -> None:
        if not self.has(permission):
            raise PermissionDeniedError(f"Permission '{permission.value}' is required")

    def budget(self, holder: str) -> Budget | None:
        return next((budget for budget in self.budgets if budget.holder == holder), None)

    @property
    def budget_nanos(self) -> int | None:
        """The user's own budget as read (None: unlimited)."""
        user = self.budget("user")
        return None if user is None else user.nanos

    def may_use(self, router_id: int) -> bool:
        return self.limits is None or router_id in self.limits

    def require_user(self) -> int:
        if self.user_id is None:
            raise PermissionDeniedError("The master key is not a user; use a user's API key")
        return self.user_id


MASTER_PRINCIPAL = Principal(
    user_id=None, key_id=None, key_name=None, role_id=None, organization_id=None,
    permissions=ALL_PERMISSIONS, limits=None, priority=0, budgets=(), expires=None,
)
