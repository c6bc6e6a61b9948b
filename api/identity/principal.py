"""The authenticated caller, as every service sees it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from api.errors import PermissionDeniedError
from api.identity.schemas import Permission

ALL_PERMISSIONS = frozenset(p.value for p in Permission)


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
    # The user's budget in the database (nanos; None: unlimited). Live balances are elsewhere.
    budget_nanos: int | None
    # The earlier of the key's and the user's expiry.
    expires: datetime | None
    # When it was read from the database (time.monotonic()): how old `budget_nanos` may be.
    loaded_at: float = 0.0

    def has(self, permission: Permission) -> bool:
        return permission.value in self.permissions

    def require(self, permission: Permission) -> None:
        if not self.has(permission):
            raise PermissionDeniedError(f"Permission '{permission.value}' is required")

    def may_use(self, router_id: int) -> bool:
        return self.limits is None or router_id in self.limits

    def require_user(self) -> int:
        if self.user_id is None:
            raise PermissionDeniedError("The master key is not a user; use a user's API key")
        return self.user_id


MASTER_PRINCIPAL = Principal(
    user_id=None, key_id=None, key_name=None, role_id=None, organization_id=None,
    permissions=ALL_PERMISSIONS, limits=None, priority=0, budget_nanos=None, expires=None,
)
