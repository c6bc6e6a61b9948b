"""Which models a caller may call: its role's routers, narrowed by its key's and its
organization's lists of models (names or aliases), when they have one."""

from __future__ import annotations

from api.catalog.catalog import ModelCatalog, RouterEntry
from api.identity.principal import Principal


def may_call(catalog: ModelCatalog, principal: Principal, router: RouterEntry) -> bool:
    if not principal.may_use(router.id):
        return False
    for allowed in (principal.key_models, principal.organization_models):
        if allowed is not None and not any(
            (listed := catalog.resolve(name)) is not None and listed.id == router.id for name in allowed
        ):
            return False
    return True
